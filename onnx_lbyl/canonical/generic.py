"""The generic part of canonicalisation, done by onnxscript's optimizer (chosen by measurement:
bench/results/canonical_libraries.md): constant folding, Constant nodes to initializers and
removal of no-op nodes.

onnxscript.optimizer.optimize() itself is not used: its default rewrite rules fuse
BatchNormalization into the Conv (the default method reads BN's statistics), it merges equal
initializers (a shared weight makes a layer unprunable) and it turns Flatten into Reshape.
Instead this module runs the same building blocks, all public API of onnxscript and onnx_ir:
constant folding, the no-op rewrite rules only, dead-node removal, and lifting every Constant
node into an initializer.
"""
from __future__ import annotations

import collections

import numpy as np
import onnx

# The folder's default limits (8192 elements in, 262144 out) leave Paddle2ONNX weights that
# are computed from Constants (a Reshape of a flat weight) unfolded; folding a node whose
# output is no larger than the model's largest constant cannot grow the file much.
DEFAULT_OUTPUT_LIMIT = 262144


def _no_op_rules():
    from onnxscript.rewriter.rules import common as rules
    return [
        rules.no_op_cast_rule,             # Cast to the type the tensor has
        rules.no_op_expand_rule,           # Expand to the shape the tensor has
        rules.no_op_transpose_rule,        # Transpose with the identity perm
        rules.mul_by_1_rule, rules.add_0_rule, rules.sub_0_rule, rules.div_by_1_rule,
        rules.dropout_inference_rule, rules.dropout_zero_rule,
        rules.reshape_reshape_rule,        # Reshape(Reshape(x, a), b) -> Reshape(x, b)
        rules.transpose_transpose_rule,    # two Transposes -> one (none if they cancel)
        rules.collapse_slice_rule, rules.collapse_slice2_rule,  # Slices that take everything
    ]


def _largest_constant(model: onnx.ModelProto) -> int:
    sizes = [int(np.prod(t.dims)) for t in model.graph.initializer]
    for node in model.graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.type == onnx.AttributeProto.TENSOR:
                    sizes.append(int(np.prod(a.t.dims)))
    return max(sizes, default=0)


def fold_and_clean(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """Constant folding, Constant nodes to initializers and no-op removal by onnxscript.

    `model` is not modified. The graph's inputs and outputs keep their names (onnxscript renames
    a producer's output rather than dropping a graph output's name); the caller restores their
    value_info, the opset imports and metadata exactly."""
    import onnx_ir as ir
    import onnx_ir.passes.common as common_passes
    import onnxscript.optimizer
    from onnxscript import rewriter

    limit = max(DEFAULT_OUTPUT_LIMIT, _largest_constant(model))
    ir_model = ir.serde.deserialize_model(model)
    onnxscript.optimizer.fold_constants(ir_model, onnx_shape_inference=True,
                                        input_size_limit=limit, output_size_limit=limit)
    ir_model = rewriter.rewrite(ir_model, pattern_rewrite_rules=_no_op_rules())
    # folding once more picks up what the rules exposed (an Identity left by a no-op rule)
    onnxscript.optimizer.fold_constants(ir_model, onnx_shape_inference=False,
                                        input_size_limit=limit, output_size_limit=limit)
    common_passes.RemoveUnusedNodesPass()(ir_model)
    common_passes.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0)(ir_model)
    result = ir.serde.serialize_model(ir_model)
    return result, _log(model, result)


def _log(before: onnx.ModelProto, after: onnx.ModelProto) -> list[str]:
    old = collections.Counter(n.op_type for n in before.graph.node)
    new = collections.Counter(n.op_type for n in after.graph.node)
    lines = []
    lifted = old["Constant"] - new["Constant"]
    if lifted:
        lines.append(f"{lifted} Constant nodes became initializers or were folded")
    removed = {op: old[op] - new[op] for op in old if op != "Constant" and old[op] > new[op]}
    added = {op: new[op] - old[op] for op in new if op != "Constant" and new[op] > old[op]}
    if removed:
        total = sum(removed.values())
        detail = ", ".join(f"{k} {v}" for k, v in sorted(removed.items(), key=lambda kv: (-kv[1], kv[0])))
        lines.append(f"{total} nodes folded into constants or removed as no-ops ({detail})")
    if added:
        detail = ", ".join(f"{k} {v}" for k, v in sorted(added.items()))
        lines.append(f"nodes added by the constant folder: {detail}")
    return lines
