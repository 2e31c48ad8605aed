"""Canonicalise: turn a real-world export into standard, deterministic ONNX for the group analysis.

    model, log = canonicalise(onnx.load("in.onnx"))

Contract
- Returns a new ModelProto and a list of short log lines (empty when nothing changed); the
  input model is not modified.
- Deterministic: the same input gives byte-identical output.
- Keeps the graph's input and output names, types and shapes, the opset imports, the IR
  version, the producer fields and metadata_props. A model that needs nothing comes back as
  an exact copy.
- Never fuses BatchNormalization (the default method reads its statistics); BN nodes come out
  as they went in.
- An initializer that is also a graph input (old IR: a default the caller may override) is
  left as it is: it is not folded and nothing is folded into it.

Passes, in order (each is a function of its own, testable alone):
1. `generic.fold_and_clean` (onnxscript's optimizer building blocks, chosen by measurement,
   bench/results/canonical_libraries.md): Constant nodes become initializers, nodes whose
   inputs are all constants are folded (Paddle2ONNX Reshape targets, Clip bounds, Shape of a
   static tensor...), no-ops go (Identity, Cast to the same type, inference Dropout, Reshape to
   the same shape, identity Transpose, x*1, x+0, full Slices); a graph output's name survives.
2. `layout.cancel_transposes`: NHWC exports' inverse Transpose pairs around elementwise regions
   cancel, the region's constants permuted.
3. `folds.fold_conv_arithmetic`: a per-channel Add/Sub after a Conv or Gemm becomes its bias,
   a per-channel Mul/Div after a Conv scales its filters (BN written as arithmetic).
4. `flatten.reshape_to_flatten`: a Reshape to [batch, features] becomes Flatten(axis=1);
   `flatten.drop_noop_flatten`: a Flatten of a tensor that is already 2-D goes.
5. `generic.fold_and_clean` again when 2-4 changed anything (what they left unused goes).
"""
from __future__ import annotations

import onnx

from .flatten import drop_noop_flatten, reshape_to_flatten
from .folds import fold_bias_add, fold_channel_scale, fold_conv_arithmetic
from .generic import fold_and_clean
from .layout import cancel_transposes

__all__ = ["canonicalise", "fold_and_clean", "cancel_transposes", "fold_bias_add", "fold_channel_scale",
           "fold_conv_arithmetic", "reshape_to_flatten", "drop_noop_flatten"]


def canonicalise(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """A canonical copy of `model` and what was changed, one short line per kind of change;
    `model` itself, and no lines, when nothing changed (a second copy of the weights would
    serve nothing: callers only read it, or restore what they edit)."""
    work = onnx.ModelProto()
    work.CopyFrom(model)
    work, log = fold_and_clean(work)

    removed, moved = cancel_transposes(work)
    if removed:
        log.append(f"{removed} layout Transposes cancelled ({moved} elementwise nodes moved to the other layout)")
    adds, scales = fold_conv_arithmetic(work)
    if adds:
        log.append(f"{adds} per-channel Add/Sub after a Conv or Gemm folded into its bias")
    if scales:
        log.append(f"{scales} per-channel Mul/Div after a Conv folded into its weights")
    flattened = reshape_to_flatten(work)
    if flattened:
        log.append(f"{flattened} flattening Reshapes became Flatten(axis=1)")
    noop_flattens = drop_noop_flatten(work)
    if noop_flattens:
        log.append(f"{noop_flattens} Flatten of an already 2-D tensor removed")
    if removed or adds or scales or flattened or noop_flattens:
        work, again = fold_and_clean(work)
        log += [f"then: {line}" for line in again]

    _restore_interface(model, work)
    _restore_batchnorm(model, work)
    if _same_graph(model, work):
        return model, []
    return work, log


def _restore_interface(original: onnx.ModelProto, work: onnx.ModelProto) -> None:
    """Put back, exactly, what the contract says is kept (the library may reorder or refine it)."""
    for kind in ("input", "output"):
        old, new = getattr(original.graph, kind), getattr(work.graph, kind)
        if [v.name for v in old] != [v.name for v in new]:
            raise RuntimeError(f"canonicalisation changed the graph {kind}s: "
                               f"{[v.name for v in old]} -> {[v.name for v in new]}")
        del new[:]
        new.extend(old)
    work.graph.name = original.graph.name
    work.graph.doc_string = original.graph.doc_string
    del work.opset_import[:]
    work.opset_import.extend(original.opset_import)
    del work.metadata_props[:]
    work.metadata_props.extend(original.metadata_props)
    for field in ("ir_version", "producer_name", "producer_version", "domain", "model_version", "doc_string"):
        setattr(work, field, getattr(original, field))


def _restore_batchnorm(original: onnx.ModelProto, work: onnx.ModelProto) -> None:
    """BatchNormalization nodes exactly as they were (onnx_ir's dead-code pass drops a default
    `training_mode=0` and unused optional outputs: harmless, but BN is kept as it is)."""
    before = {n.output[0]: n for n in original.graph.node if n.op_type == "BatchNormalization" and n.output}
    for node in work.graph.node:
        old = before.get(node.output[0]) if node.op_type == "BatchNormalization" and node.output else None
        if old is not None and list(old.input) == list(node.input) and node.SerializeToString() != old.SerializeToString():
            node.CopyFrom(old)


def _same_graph(a: onnx.ModelProto, b: onnx.ModelProto) -> bool:
    """Same nodes (in order, attributes and all) and same initializers by name."""
    if len(a.graph.node) != len(b.graph.node):
        return False
    if any(x.SerializeToString() != y.SerializeToString() for x, y in zip(a.graph.node, b.graph.node)):
        return False
    return sorted(t.name for t in a.graph.initializer) == sorted(t.name for t in b.graph.initializer)
