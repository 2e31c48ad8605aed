"""The weights and declarations of an input model checked before any work (issue 12).

onnx.checker accepts a model whose initializer holds fewer numbers than its dims say, whose
weights are NaN, whose BatchNormalization has a negative variance or a weight of another
float type than its input: it checks structure, not values or types. Each of those would
surface deep in the solvers, as a crash or a validation failure, long after the point where
the input could have been refused in one line. `check_model_sanity` is that point: it runs
right after loading, reads every initializer once (a vectorised finiteness test), and raises
InputError naming the tensor and what is wrong with it.

Recorded intermediate shapes (graph.value_info) are hints an exporter or an earlier tool left;
when they contradict what ONNX infers from the nodes they are dropped, not trusted: the
pipeline infers the shapes of its own output afresh anyway.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from ..errors import InputError, first_line
from .shapes import weightless

FLOAT_TYPES = {TensorProto.FLOAT: "float32", TensorProto.DOUBLE: "float64", TensorProto.FLOAT16: "float16",
               TensorProto.BFLOAT16: "bfloat16"}
# operator -> input slots holding the parameters the tool reads or rewrites
# (not Add/Mul constants: an attention mask may rightly hold -inf or float32's lowest value)
PARAMETER_SLOTS = {"Conv": (1, 2), "Gemm": (1, 2), "MatMul": (1,), "BatchNormalization": (1, 2, 3, 4),
                   "ConvTranspose": (1, 2)}
LAYERS = ("Conv", "Gemm", "MatMul", "ConvTranspose")
HUGE = 1e15  # largest magnitude of a layer parameter (trained weights and BN statistics stay far below)
_TYPED_FIELDS = {
    TensorProto.FLOAT: "float_data", TensorProto.COMPLEX64: "float_data", TensorProto.DOUBLE: "double_data",
    TensorProto.COMPLEX128: "double_data", TensorProto.INT64: "int64_data", TensorProto.UINT64: "uint64_data",
    TensorProto.UINT32: "uint64_data", TensorProto.STRING: "string_data",
}
_PER_ELEMENT = {TensorProto.COMPLEX64: 2, TensorProto.COMPLEX128: 2}


def type_name(elem_type: int) -> str:
    return FLOAT_TYPES.get(elem_type) or TensorProto.DataType.Name(elem_type).lower()


def check_model_sanity(model: onnx.ModelProto) -> onnx.ModelProto:
    """Raise InputError for inconsistent or non-finite weights and types; return `model`, or a
    copy without its stale value_info when that is what contradicted the inferred shapes."""
    _check_opsets(model)
    initializers = {t.name: t for t in model.graph.initializer}
    for tensor in model.graph.initializer:
        _check_size(tensor)
    constants = dict(initializers)
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attribute in node.attribute:
                if attribute.name == "value" and attribute.type == onnx.AttributeProto.TENSOR:
                    _check_size(attribute.t, f"constant {node.output[0]!r}")
                    constants[node.output[0]] = attribute.t
    parameters = {}  # tensor name -> (node, slot) of a layer parameter the tool reads
    for node in model.graph.node:
        for slot in PARAMETER_SLOTS.get(node.op_type, ()):
            if slot < len(node.input) and node.input[slot] in constants:
                parameters.setdefault(node.input[slot], (node, slot))
    for name, tensor in constants.items():
        _check_values(name, tensor, parameter=name in parameters)
    _check_parameter_types(model, constants)
    for node in model.graph.node:
        if node.op_type == "BatchNormalization":
            _check_batchnorm(node, constants)
        elif node.op_type == "Conv":
            _check_conv(node, constants)
        elif node.op_type == "Gemm":
            _check_gemm(node, constants)
    return _check_inference(model)


def _label(node: onnx.NodeProto) -> str:
    return f"{node.op_type} {node.name or node.output[0]!r}"


def _check_size(tensor: TensorProto, what: str | None = None) -> None:
    """The numbers a tensor holds agree with its dims (onnx.checker does not look)."""
    what = what or f"initializer {tensor.name!r}"
    if any(d < 0 for d in tensor.dims):
        raise InputError(f"{what} has a negative dimension {list(tensor.dims)}")
    if tensor.data_location == TensorProto.EXTERNAL:
        return  # graph.io.check_external_files checked its byte range
    if tensor.data_type == TensorProto.UNDEFINED:
        raise InputError(f"{what} has no data type")
    count = int(np.prod(tensor.dims, dtype=np.int64))
    if tensor.HasField("raw_data"):
        if tensor.data_type == TensorProto.STRING:
            raise InputError(f"{what} is a string tensor stored as raw bytes, which ONNX does not allow")
        try:
            itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
        except (KeyError, TypeError, ValueError):
            raise InputError(f"{what} has an unknown data type {tensor.data_type}")
        expected = _packed_bytes(tensor.data_type, count, itemsize)
        if len(tensor.raw_data) != expected:
            raise InputError(f"{what}: its dims {list(tensor.dims)} need {expected} bytes of "
                             f"{type_name(tensor.data_type)} but it holds {len(tensor.raw_data)}")
        return
    per = _PER_ELEMENT.get(tensor.data_type, 1)
    held = _typed_length(tensor)
    expected = -(-count // 2) if _packed_bytes(tensor.data_type, 2, 1) == 1 else count * per
    if held != expected:
        raise InputError(f"{what}: its dims {list(tensor.dims)} need {count} values but it holds {held // per}")


def _typed_length(tensor: TensorProto) -> int:
    field = _TYPED_FIELDS.get(tensor.data_type, "int32_data")
    return len(getattr(tensor, field))


def _packed_bytes(data_type: int, count: int, itemsize: int) -> int:
    """Bytes of `count` elements: 4-bit types pack two per byte."""
    four_bit = {getattr(TensorProto, n) for n in ("INT4", "UINT4", "FLOAT4E2M1") if hasattr(TensorProto, n)}
    return (count + 1) // 2 if data_type in four_bit else count * itemsize


def _values(tensor: TensorProto) -> np.ndarray:
    try:
        return numpy_helper.to_array(tensor)
    except Exception as exc:
        raise InputError(f"initializer {tensor.name!r} cannot be read: {first_line(exc)}")


def _check_values(name: str, tensor: TensorProto, parameter: bool) -> None:
    """NaN is never a weight; an infinity, or a magnitude beyond HUGE, is refused in the
    parameters of a layer or BN (a constant elsewhere, e.g. an attention mask's -inf or a Clip
    bound, may be infinite). A flipped exponent bit makes a huge weight: no trained model has
    one, and its products overflow float32 in onnxruntime and the statistics.

    One min and one max per tensor decide it (NaN propagates through both), read in the
    tensor's own type: no float64 copy or boolean mask of a large weight unless it fails."""
    if tensor.data_type not in FLOAT_TYPES or tensor.data_location == TensorProto.EXTERNAL:
        return
    values = np.asarray(_values(tensor), dtype=np.float32 if tensor.data_type == TensorProto.BFLOAT16 else None)
    if values.size == 0:
        return
    low, high = float(values.min()), float(values.max())
    if np.isfinite(low) and np.isfinite(high):
        if parameter and max(-low, high) > HUGE:
            raise InputError(f"initializer {name!r} holds {low if -low > high else high:.3g}, "
                             f"beyond {HUGE:g} where float32 arithmetic overflows: not a usable weight")
        return
    if np.isnan(values).any():
        raise InputError(f"initializer {name!r} holds NaN ({int(np.isnan(values).sum())} of {values.size} values)")
    if parameter:
        finite = np.isfinite(values)
        raise InputError(f"initializer {name!r} holds an infinite value ({int((~finite).sum())} of {values.size})")


def _array(constants: dict, name: str) -> np.ndarray | None:
    tensor = constants.get(name)
    return None if tensor is None else _values(tensor)


def _attribute(node: onnx.NodeProto, name: str, default):
    for attribute in node.attribute:
        if attribute.name == name:
            return onnx.helper.get_attribute_value(attribute)
    return default


def _check_batchnorm(node: onnx.NodeProto, constants: dict) -> None:
    label = _label(node)
    if int(_attribute(node, "training_mode", 0)):
        raise InputError(f"{label} has training_mode=1: export the model in inference (eval) mode")
    if len(node.output) > 1 and any(node.output[1:]):
        raise InputError(f"{label} has the training outputs (running mean/variance): export in eval mode")
    params = {key: _array(constants, node.input[slot]) if slot < len(node.input) else None
              for slot, key in enumerate(("x", "scale", "bias", "mean", "var")) if slot > 0}
    lengths = {key: value.size for key, value in params.items() if value is not None}
    for key, value in params.items():
        if value is not None and value.ndim != 1:
            raise InputError(f"{label}: its {key} {node.input[list(params).index(key) + 1]!r} has shape "
                             f"{list(value.shape)}, not one value per channel")
    if len(set(lengths.values())) > 1:
        text = ", ".join(f"{key} {n}" for key, n in lengths.items())
        raise InputError(f"{label}: its parameters disagree in length ({text})")
    var = params["var"]
    if var is None:
        return
    eps = float(_attribute(node, "epsilon", 1e-5))
    if not np.isfinite(eps) or eps < 0:
        raise InputError(f"{label} has epsilon {eps}, not a finite number >= 0")
    var = np.asarray(var, dtype=np.float64)
    if (var < 0).any():
        channel = int(np.argmax(var < 0))
        raise InputError(f"{label} has a negative running variance ({var[channel]:g} in channel {channel} of "
                         f"{node.input[4]!r})")
    if (var + eps <= 0).any():
        channel = int(np.argmax(var + eps <= 0))
        raise InputError(f"{label} has a zero running variance in channel {channel} with epsilon {eps:g}: "
                         "it divides by zero")


def _check_conv(node: onnx.NodeProto, constants: dict) -> None:
    if len(node.input) < 3 or not node.input[2]:
        return
    weight, bias = constants.get(node.input[1]), constants.get(node.input[2])
    if weight is None or bias is None or not weight.dims:
        return
    count = int(np.prod(bias.dims, dtype=np.int64))
    if len(bias.dims) != 1 or count != weight.dims[0]:
        raise InputError(f"{_label(node)}: its bias {node.input[2]!r} has shape {list(bias.dims)} but its weight "
                         f"{node.input[1]!r} has {weight.dims[0]} output channels")


def _check_gemm(node: onnx.NodeProto, constants: dict) -> None:
    """C must broadcast to [M, N] (onnx.checker and shape inference let a wrong one through)."""
    if len(node.input) < 3 or not node.input[2]:
        return
    weight, bias = constants.get(node.input[1]), constants.get(node.input[2])
    if weight is None or bias is None or len(weight.dims) != 2 or len(bias.dims) > 2:
        return
    outputs = weight.dims[0] if int(_attribute(node, "transB", 0)) else weight.dims[1]
    if bias.dims and bias.dims[-1] not in (1, outputs):
        raise InputError(f"{_label(node)}: its bias {node.input[2]!r} has shape {list(bias.dims)}, which does not "
                         f"broadcast to its {outputs} outputs")


def _check_opsets(model: onnx.ModelProto) -> None:
    """An operator set newer than the installed onnx knows cannot be checked or run."""
    newest = onnx.defs.onnx_opset_version()
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx") and not 1 <= opset.version <= newest:
            raise InputError(f"model imports opset {opset.version} of the default ONNX domain; the installed "
                             f"onnx {onnx.__version__} knows opsets 1 to {newest}")


def _check_parameter_types(model: onnx.ModelProto, constants: dict) -> None:
    """Every weight and bias of a layer or BN has the float type of the layer's input: the
    tool prunes float models, and ONNX would reject the mixed types anyway."""
    types = {i.name: i.type.tensor_type.elem_type for i in model.graph.input if i.type.HasField("tensor_type")}
    try:
        graph = _inferred(model, value_info=False)
        types.update({v.name: v.type.tensor_type.elem_type for v in graph.value_info})
    except Exception:
        pass  # the strict inference after says what is wrong
    for node in model.graph.node:
        if node.op_type not in LAYERS + ("BatchNormalization",):
            continue
        for slot in PARAMETER_SLOTS[node.op_type]:
            if slot >= len(node.input) or node.input[slot] not in constants:
                continue
            tensor = constants[node.input[slot]]
            if tensor.data_type not in FLOAT_TYPES:
                raise InputError(f"{_label(node)}: its parameter {node.input[slot]!r} is "
                                 f"{type_name(tensor.data_type)}; only float weights can be pruned "
                                 "(prune the float model, then quantize)")
            data = types.get(node.input[0])
            if data in FLOAT_TYPES and tensor.data_type != data and not (node.op_type == "BatchNormalization"
                                                                         and slot > 2):
                raise InputError(f"{_label(node)}: its parameter {node.input[slot]!r} is "
                                 f"{type_name(tensor.data_type)} but its input is {type_name(data)}; "
                                 "mixed-precision weights are not supported")


def _inferred(model: onnx.ModelProto, value_info: bool = True, **options) -> onnx.GraphProto:
    """Shape inference on the weightless copy (graph.shapes), with or without the recorded
    value_info; raises what onnx.shape_inference raises."""
    skeleton = weightless(model)
    if not value_info:
        skeleton.graph.ClearField("value_info")
    return onnx.shape_inference.infer_shapes(skeleton, **options).graph


def _check_inference(model: onnx.ModelProto) -> onnx.ModelProto:
    """Strict, type-checked ONNX shape inference, which the pruned model must pass too:
    a model that fails it is refused now, not after the work. value_info that alone makes it
    fail is dropped (from a copy: the caller's model is never modified)."""
    options = {"strict_mode": True, "check_type": True}
    graph = model.graph
    declared = {v.name for v in (*graph.input, *graph.output)} | {t.name for t in graph.initializer}
    if any(v.name in declared for v in graph.value_info):
        # a second declaration of a graph input or output (or a weight): the graph's own wins
        kept = [v for v in graph.value_info if v.name not in declared]
        model = _copy(model)
        model.graph.ClearField("value_info")
        model.graph.value_info.extend(kept)
    try:
        _inferred(model, **options)
        return model
    except Exception as exc:
        first = exc
    if model.graph.value_info:
        try:
            _inferred(model, value_info=False, **options)
        except Exception as exc:
            first = exc
        else:
            repaired = _copy(model)
            repaired.graph.ClearField("value_info")
            return repaired
    raise InputError(f"input model is inconsistent: {_inference_message(first)}")


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy


def _inference_message(exc: Exception) -> str:
    text = first_line(exc)
    for prefix in ("[ShapeInferenceError] Inference error(s): ", "[ShapeInferenceError] ", "[TypeInferenceError] "):
        text = text.replace(prefix, "")
    return f"ONNX shape inference fails: {text}"
