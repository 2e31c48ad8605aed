"""The construct models of tests/graphs.py are valid, run, are deterministic, and the spellings
of one function compute the same numbers."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from graphs import BUILDERS, activation_chain, constant_weights, convnext_block, hardswish_chain, silu_chain, split_c2f

def _feeds(model: onnx.ModelProto, cond: bool = True) -> dict[str, np.ndarray]:
    """A random batch of 2 for every graph input (the bool `cond` of if_subgraph included)."""
    rng = np.random.default_rng(1)
    feeds = {}
    for value in model.graph.input:
        tensor = value.type.tensor_type
        if tensor.elem_type == onnx.TensorProto.BOOL:
            feeds[value.name] = np.array(cond)
            continue
        shape = [d.dim_value if d.HasField("dim_value") else 2 for d in tensor.shape.dim]
        feeds[value.name] = rng.standard_normal(shape).astype(np.float32)
    return feeds


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_builder_is_valid_runs_and_is_deterministic(name):
    """Every builder, the quantized ones included, runs on onnxruntime 1.32."""
    model = BUILDERS[name]()
    onnx.checker.check_model(model, full_check=True)
    assert BUILDERS[name]().SerializeToString() == model.SerializeToString()
    x = next(i for i in model.graph.input if i.name == "x")
    assert x.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert x.type.tensor_type.shape.dim[0].dim_param == "batch"
    names = [n.name for n in model.graph.node]
    assert all(names) and len(set(names)) == len(names)
    outputs = _run(model, _feeds(model))
    for out in outputs:
        assert out.shape[0] == 2 and np.isfinite(out).all() and out.std() > 0


def test_seeds_change_weights():
    assert silu_chain(0).SerializeToString() != silu_chain(1).SerializeToString()


def test_if_subgraph_runs_both_branches():
    model = BUILDERS["if_subgraph"]()
    then_out, = _run(model, _feeds(model, cond=True))
    else_out, = _run(model, _feeds(model, cond=False))
    assert then_out.shape == else_out.shape and not np.allclose(then_out, else_out)


def _same_numbers(a: onnx.ModelProto, b: onnx.ModelProto, atol: float = 1e-5) -> None:
    feeds = _feeds(a)
    for u, v in zip(_run(a, feeds), _run(b, feeds)):
        np.testing.assert_allclose(u, v, atol=atol, rtol=1e-4)


def test_hardswish_spellings_compute_the_same_function():
    op = hardswish_chain(spelling="op")
    for spelling in ("hardsigmoid", "clip"):
        _same_numbers(op, hardswish_chain(spelling=spelling))


def test_gelu_operator_and_erf_form_agree():
    _same_numbers(activation_chain(op="gelu"), activation_chain(op="gelu_erf"))


def test_split_and_slice_spellings_agree():
    split = split_c2f()
    _same_numbers(split, split_c2f(slicer="slice"))
    _same_numbers(split, split_c2f(opset=11))


def test_constant_weights_is_the_silu_chain_without_initializers():
    model = constant_weights()
    assert not model.graph.initializer
    assert model.opset_import[0].version == 11
    _same_numbers(silu_chain(opset=11), model)


def test_layer_norm_spellings_agree():
    transpose = convnext_block()
    assert "LayerNormalization" in {n.op_type for n in transpose.graph.node}
    _same_numbers(transpose, convnext_block(norm="reducemean"), atol=1e-4)
    _same_numbers(transpose, convnext_block(norm="reducemean", opset=18), atol=1e-4)
