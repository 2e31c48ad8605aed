"""Which library, if any, should do the generic part of canonicalisation (constant folding, no-op removal)?

    python bench/canonical_libraries.py                 # every candidate on every model (~2 min)
    python bench/canonical_libraries.py --candidates onnxslim ours --models ppocr_cls

Candidates (each run on a serialised copy of the model, twice, to check determinism):
  ort_basic            onnxruntime ORT_ENABLE_BASIC written with optimized_model_filepath
  ort_basic_keep_bn    the same with disabled_optimizers ConvBNFusion and ConstantSharing
  onnxscript           onnxscript.optimizer.optimize (defaults)
  onnxscript_fold      onnxscript.optimizer.fold_constants + remove_unused_nodes only (no rewrite rules)
  onnxscript_keep_bn   onnx_lbyl.canonical.generic.fold_and_clean: onnxscript's constant folding, its
                       no-op rewrite rules only, dead-node removal, Constant nodes lifted to initializers
  onnxslim             onnxslim.slim (defaults)
  onnxslim_keep_bn     onnxslim.slim skipping FusionConvBN and weight tying
  onnxoptimizer        onnxoptimizer.optimize, its fuse-and-elimination passes
  onnxoptimizer_keep_bn  the same without fuse_bn_into_conv
  ours                 onnx_lbyl.canonical.canonicalise

Models: the five real files of ../shared/models that the canonicalise brief names (they are read,
never copied: their licences allow benchmark use only), plus two graphs built here with onnx.helper:
keras_nhwc (tf2onnx style: Transpose around every Conv, BN written as Mul/Add or Sub/Mul/Add in
NHWC, conv bias as an NHWC Add) and quirks_nchw (Constant weights, conv-bias Add, Identity, no-op
Cast, inference Dropout, identity Transpose, same-shape Reshape, Identity into the graph output).

For each (candidate, model) the table says: whether it ran; onnx.checker full_check; only standard
ONNX domains; two runs byte-identical; BatchNormalization count before -> after; graph input and
output names, types and shapes unchanged; time of one run; nodes before -> after; how many weight
initializers are read by more than one node (a shared weight makes its layer unprunable); what is
left of the quirks canonicalisation must remove; and the largest output difference, relative to the
output's largest magnitude, under onnxruntime on seeded random inputs.

Writes bench/results/canonical_libraries.json and .md.
"""
from __future__ import annotations

import argparse
import collections
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "models"  # the shared folder beside the project's checkout

REAL_MODELS = {
    "efficientnet_lite0_bn": ("efficientnet_lite0_bn.onnx", {}),
    "efficientnet_lite0_folded": ("efficientnet_lite0_folded.onnx", {}),
    "ppocr_cls": ("wild/ppocr_mobile_v2_cls.onnx", {"x": [1, 3, 48, 192]}),
    "ddddocr_det": ("wild/ddddocr_det.onnx", {}),
    "resnet20_bn": ("akamaster_resnet20_cifar10_bn.onnx", {}),
}
STANDARD_DOMAINS = {"", "ai.onnx"}


# ---------------------------------------------------------------- synthetic models

def keras_nhwc(seed: int = 0) -> onnx.ModelProto:
    """tf2onnx-style NHWC CNN: every Conv between Transpose(0,3,1,2) and Transpose(0,2,3,1), the
    BN after it as Mul/Add (layer 0) or Sub/Mul/Add (layer 1) on [C] constants in NHWC, a conv
    bias as an NHWC Add (layer 2), Relu in NHWC, then Reshape [N,-1] and Dense (MatMul + Add)."""
    rng = np.random.default_rng(seed)
    inits, nodes = [], []

    def init(name, array):
        inits.append(numpy_helper.from_array(np.asarray(array, np.float32), name))
        return name

    x, c = "input", 3
    for i, out in enumerate([8, 16, 16]):
        nodes.append(helper.make_node("Transpose", [x], [f"t{i}"], perm=[0, 3, 1, 2]))
        w = init(f"k{i}", rng.standard_normal((out, c, 3, 3)) * np.sqrt(2 / (9 * c)))
        nodes.append(helper.make_node("Conv", [f"t{i}", w], [f"c{i}"], pads=[1] * 4))
        nodes.append(helper.make_node("Transpose", [f"c{i}"], [f"h{i}"], perm=[0, 2, 3, 1]))
        y = f"h{i}"
        if i == 0:
            nodes.append(helper.make_node("Mul", [y, init(f"g{i}", rng.uniform(0.5, 1.5, out))], [f"m{i}"]))
            nodes.append(helper.make_node("Add", [f"m{i}", init(f"b{i}", rng.standard_normal(out) * 0.1)], [f"a{i}"]))
            y = f"a{i}"
        elif i == 1:
            nodes.append(helper.make_node("Sub", [y, init(f"mu{i}", rng.standard_normal(out) * 0.1)], [f"s{i}"]))
            nodes.append(helper.make_node("Mul", [f"s{i}", init(f"g{i}", rng.uniform(0.5, 1.5, out))], [f"m{i}"]))
            nodes.append(helper.make_node("Add", [f"m{i}", init(f"b{i}", rng.standard_normal(out) * 0.1)], [f"a{i}"]))
            y = f"a{i}"
        else:
            nodes.append(helper.make_node("Add", [y, init(f"kb{i}", rng.standard_normal(out) * 0.1)], [f"a{i}"]))
            y = f"a{i}"
        nodes.append(helper.make_node("Relu", [y], [f"r{i}"]))
        x, c = f"r{i}", out
    inits.append(numpy_helper.from_array(np.array([0, -1], np.int64), "flat_shape"))
    nodes.append(helper.make_node("Reshape", [x, "flat_shape"], ["flat"]))
    nodes.append(helper.make_node("MatMul", ["flat", init("dense", rng.standard_normal((8 * 8 * c, 10)) * 0.02)], ["d"]))
    nodes.append(helper.make_node("Add", ["d", init("dense_b", rng.standard_normal(10) * 0.1)], ["logits"]))
    graph = helper.make_graph(nodes, "keras_nhwc",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 8, 8, 3])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def quirks_nchw(seed: int = 0) -> onnx.ModelProto:
    """An NCHW CNN with the generic quirks: Constant-node weights, a conv bias as Reshape(Constant)
    + Add, Identity, a Cast to float of a float, an inference Dropout, an identity Transpose, a
    Reshape to the same static shape, and an Identity whose output is the graph output."""
    rng = np.random.default_rng(seed)

    def const(name, array):
        return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(array), name))

    nodes = [
        const("w0", (rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32)),
        const("b0", (rng.standard_normal(8) * 0.1).astype(np.float32)),
        const("b0_shape", np.array([1, 8, 1, 1], np.int64)),
        helper.make_node("Conv", ["x", "w0"], ["c0"], pads=[1] * 4),
        helper.make_node("Reshape", ["b0", "b0_shape"], ["b0r"]),
        helper.make_node("Add", ["c0", "b0r"], ["a0"]),
        helper.make_node("Identity", ["a0"], ["i0"]),
        helper.make_node("Cast", ["i0"], ["k0"], to=TensorProto.FLOAT),
        helper.make_node("Dropout", ["k0"], ["d0"]),
        helper.make_node("Relu", ["d0"], ["r0"]),
        helper.make_node("Transpose", ["r0"], ["t0"], perm=[0, 1, 2, 3]),
        const("w1", (rng.standard_normal((4, 8, 3, 3)) * 0.2).astype(np.float32)),
        helper.make_node("Conv", ["t0", "w1"], ["c1"], pads=[1] * 4),
        const("same_shape", np.array([1, 4, 6, 6], np.int64)),
        helper.make_node("Reshape", ["c1", "same_shape"], ["s1"]),
        helper.make_node("Identity", ["s1"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "quirks_nchw",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 6, 6])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def edge_init_as_input(seed: int = 0) -> onnx.ModelProto:
    """Old-IR style: the Conv weight is an initializer that is also a graph input (a default
    the caller may override), reshaped in the graph. It must stay an input, unfolded."""
    w = np.random.default_rng(seed).standard_normal(12).astype(np.float32)
    nodes = [helper.make_node("Reshape", ["w", "w_shape"], ["w4"]), helper.make_node("Conv", ["x", "w4"], ["y"])]
    graph = helper.make_graph(nodes, "init_as_input",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4]),
                               helper.make_tensor_value_info("w", TensorProto.FLOAT, [12])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 4, 4])],
                              [numpy_helper.from_array(w, "w"),
                               numpy_helper.from_array(np.array([4, 3, 1, 1], np.int64), "w_shape")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)], ir_version=6)


def edge_constant_attrs(seed: int = 0) -> onnx.ModelProto:
    """Opset 21, Constant nodes written with value_floats and value_int, folded through a Cast."""
    nodes = [helper.make_node("Constant", [], ["c"], value_floats=[1.0, 2.0, 3.0]),
             helper.make_node("Constant", [], ["k"], value_int=2),
             helper.make_node("Cast", ["k"], ["kf"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["c", "kf"], ["c2"]),
             helper.make_node("Add", ["x", "c2"], ["y"])]
    graph = helper.make_graph(nodes, "constant_attrs", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)


SYNTHETIC = {"keras_nhwc": (keras_nhwc, {}), "quirks_nchw": (quirks_nchw, {}),
             "edge_init_as_input": (edge_init_as_input, {}), "edge_constant_attrs": (edge_constant_attrs, {})}


# ---------------------------------------------------------------- candidates

def _ort(model: onnx.ModelProto, disabled: list[str]) -> onnx.ModelProto:
    import onnxruntime as ort
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = os.path.join(tmp, "in.onnx"), os.path.join(tmp, "out.onnx")
        onnx.save(model, src)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = dst
        ort.InferenceSession(src, options, providers=["CPUExecutionProvider"], disabled_optimizers=disabled)
        return onnx.load(dst)


def _onnxscript(model: onnx.ModelProto) -> onnx.ModelProto:
    import onnxscript.optimizer
    return onnxscript.optimizer.optimize(model)


def _onnxscript_fold(model: onnx.ModelProto) -> onnx.ModelProto:
    import onnx_ir as ir
    import onnxscript.optimizer
    ir_model = ir.serde.deserialize_model(model)
    onnxscript.optimizer.fold_constants(ir_model)
    onnxscript.optimizer.remove_unused_nodes(ir_model)
    return ir.serde.serialize_model(ir_model)


def _onnxslim(model: onnx.ModelProto, **kwargs) -> onnx.ModelProto:
    import onnxslim
    return onnxslim.slim(model, **kwargs)


def _onnxoptimizer(model: onnx.ModelProto, keep_bn: bool) -> onnx.ModelProto:
    import onnxoptimizer
    passes = [p for p in onnxoptimizer.get_fuse_and_elimination_passes()
              if not (keep_bn and p == "fuse_bn_into_conv")]
    return onnxoptimizer.optimize(model, passes)


def _onnxscript_keep_bn(model: onnx.ModelProto) -> onnx.ModelProto:
    from onnx_lbyl.canonical.generic import fold_and_clean
    return fold_and_clean(model)[0]


def _ours(model: onnx.ModelProto) -> onnx.ModelProto:
    from onnx_lbyl.canonical import canonicalise
    return canonicalise(model)[0]


CANDIDATES = {
    "ort_basic": lambda m: _ort(m, []),
    "ort_basic_keep_bn": lambda m: _ort(m, ["ConvBNFusion", "ConstantSharing"]),
    "onnxscript": _onnxscript,
    "onnxscript_fold": _onnxscript_fold,
    "onnxscript_keep_bn": _onnxscript_keep_bn,
    "onnxslim": _onnxslim,
    "onnxslim_keep_bn": lambda m: _onnxslim(m, skip_fusion_patterns=["FusionConvBN"],
                                            skip_optimizations=["weight_tying"]),
    "onnxoptimizer": lambda m: _onnxoptimizer(m, keep_bn=False),
    "onnxoptimizer_keep_bn": lambda m: _onnxoptimizer(m, keep_bn=True),
    "ours": _ours,
}


def _version(candidate: str) -> str:
    module = {"ort": "onnxruntime", "onnxscript": "onnxscript", "onnxslim": "onnxslim",
              "onnxoptimizer": "onnxoptimizer", "ours": "onnx_lbyl"}[candidate.split("_")[0]]
    try:
        return __import__(module).__version__
    except Exception:  # noqa: BLE001 - not installed
        return "not installed"


# ---------------------------------------------------------------- measurements

def _constant_names(graph: onnx.GraphProto) -> set[str]:
    inputs = {i.name for i in graph.input}
    names = {t.name for t in graph.initializer if t.name not in inputs}
    names |= {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    return names


def _value(graph: onnx.GraphProto, name: str) -> np.ndarray | None:
    for t in graph.initializer:
        if t.name == name:
            return numpy_helper.to_array(t)
    for n in graph.node:
        if n.op_type == "Constant" and n.output[0] == name and n.attribute[0].name == "value":
            return numpy_helper.to_array(n.attribute[0].t)
    return None


def quirks(model: onnx.ModelProto) -> dict[str, int]:
    """What is left of what canonicalisation must remove (0 everywhere = canonical)."""
    graph = model.graph
    try:
        typed = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001
        typed = model
    types = {v.name: v.type.tensor_type.elem_type for v in
             list(typed.graph.value_info) + list(typed.graph.input) + list(typed.graph.output)}
    types.update({t.name: t.data_type for t in graph.initializer})
    consts = _constant_names(graph)
    readers = collections.defaultdict(list)
    for n in graph.node:
        for i in n.input:
            readers[i].append(n)
    outputs = {o.name for o in graph.output}
    count = collections.Counter()
    for n in graph.node:
        op = n.op_type
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        if op == "Constant":
            count["Constant"] += 1
            continue
        if n.input and all(i in consts for i in n.input if i):
            count["foldable"] += 1
        if op == "Identity":
            count["Identity"] += 1
        elif op == "Dropout":
            count["Dropout"] += 1
        elif op == "Cast" and types.get(n.input[0]) == attrs.get("to"):
            count["noop Cast"] += 1
        elif op == "Transpose" and list(attrs.get("perm", [])) == sorted(attrs.get("perm", [])):
            count["noop Transpose"] += 1
        if op == "Transpose":
            count["Transpose"] += 1
        if op in ("Conv", "Gemm") and len(readers[n.output[0]]) == 1 and n.output[0] not in outputs:
            nxt = readers[n.output[0]][0]
            other = [i for i in nxt.input if i != n.output[0]]
            if nxt.op_type in ("Add", "Mul", "Sub") and len(other) == 1 and other[0] in consts:
                value = _value(graph, other[0])
                if value is not None and value.size > 1:
                    count[f"{op}->{nxt.op_type}(const)"] += 1
    weights = collections.Counter(i for n in graph.node for i in set(n.input) if i in consts)
    count["shared constants"] = sum(1 for name, k in weights.items() if k > 1
                                  and (v := _value(graph, name)) is not None and v.size > 1)
    return dict(sorted(count.items()))


def _io(model: onnx.ModelProto) -> list:
    """Every graph input (an initializer listed as an input too) and output: name, type, dims."""
    def desc(v):
        t = v.type.tensor_type
        return (v.name, t.elem_type, [d.dim_param or d.dim_value for d in t.shape.dim])
    return ([desc(v) for v in model.graph.input], [desc(v) for v in model.graph.output])


def _feeds(model: onnx.ModelProto, shapes: dict[str, list[int]], seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    inits = {t.name for t in model.graph.initializer}
    feeds = {}
    for v in model.graph.input:
        if v.name in inits:
            continue
        dims = shapes.get(v.name) or [d.dim_value if d.dim_value > 0 else 2 for d in v.type.tensor_type.shape.dim]
        dtype = helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type)
        feeds[v.name] = rng.standard_normal(dims).astype(dtype)
    return feeds


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, feeds)))


def _ops(model: onnx.ModelProto) -> dict[str, int]:
    return dict(sorted(collections.Counter(n.op_type for n in model.graph.node).items()))


def measure(candidate: str, name: str, model: onnx.ModelProto, shapes: dict) -> dict:
    fn = CANDIDATES[candidate]
    row: dict = {"candidate": candidate, "model": name}
    data = model.SerializeToString()
    given = onnx.load_from_string(data)
    try:
        first = fn(given)  # also warms the library's imports up: the second run is the one timed
        start = time.perf_counter()
        second = fn(onnx.load_from_string(data))
        row["seconds"] = round(time.perf_counter() - start, 3)
    except Exception as exc:  # noqa: BLE001 - a failing candidate is a result
        row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"
        return row
    a, b = first.SerializeToString(), second.SerializeToString()
    row["deterministic"] = a == b
    row["sha256"] = hashlib.sha256(a).hexdigest()[:12]
    try:
        onnx.checker.check_model(first, full_check=True)
        row["checker"] = "ok"
    except Exception as exc:  # noqa: BLE001
        row["checker"] = str(exc).splitlines()[0][:160]
    domains = sorted({n.domain for n in first.graph.node} - STANDARD_DOMAINS)
    row["nonstandard_domains"] = domains
    row["bn"] = [_ops(model).get("BatchNormalization", 0), _ops(first).get("BatchNormalization", 0)]
    row["io_preserved"] = _io(model) == _io(first)
    if not row["io_preserved"]:
        row["io_before"], row["io_after"] = _io(model), _io(first)
    row["opset"] = [[(o.domain, o.version) for o in model.opset_import], [(o.domain, o.version) for o in first.opset_import]]
    row["metadata_preserved"] = ({p.key: p.value for p in model.metadata_props}
                                  == {p.key: p.value for p in first.metadata_props})
    row["opset_preserved"] = row["opset"][0] == row["opset"][1]
    row["nodes"] = [len(model.graph.node), len(first.graph.node)]
    row["transposes"] = [_ops(model).get("Transpose", 0), _ops(first).get("Transpose", 0)]
    row["ops_after"] = _ops(first)
    row["quirks_before"], row["quirks_after"] = quirks(model), quirks(first)
    try:
        feeds = _feeds(model, shapes)
        ref, out = _run(model, feeds), _run(first, feeds)
        row["max_rel_diff"] = max(float(np.max(np.abs(ref[k].astype(np.float64) - out[k]))
                                        / max(float(np.max(np.abs(ref[k]))), 1e-30)) for k in ref)
    except Exception as exc:  # noqa: BLE001
        row["max_rel_diff"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
    row["input_untouched"] = given.SerializeToString() == data
    if candidate == "ours":
        from onnx_lbyl.canonical import canonicalise
        row["log"] = canonicalise(model)[1]
        before, after = _ops(model), row["ops_after"]
        row["ops_changed"] = {op: [before.get(op, 0), after.get(op, 0)] for op in sorted(set(before) | set(after))
                              if before.get(op, 0) != after.get(op, 0)}
    return row


# ---------------------------------------------------------------- report

def _load_models(names: list[str]) -> dict[str, tuple[onnx.ModelProto, dict]]:
    models = {}
    for name in names:
        if name in SYNTHETIC:
            build, shapes = SYNTHETIC[name]
            models[name] = (build(), shapes)
        else:
            path, shapes = REAL_MODELS[name]
            if not (SHARED / path).exists():
                print(f"skipped {name}: {SHARED / path} not found", file=sys.stderr)
                continue
            models[name] = (onnx.load(str(SHARED / path)), shapes)
    return models


def _fmt_quirks(q: dict) -> str:
    left = {k: v for k, v in q.items() if v and k not in ("Transpose", "shared constants")}
    return ", ".join(f"{k} {v}" for k, v in left.items()) or "none"


def _verdict(row: dict) -> str:
    if "error" in row:
        return "fails"
    problems = []
    if row["checker"] != "ok":
        problems.append("checker")
    if row["nonstandard_domains"]:
        problems.append("non-standard ops")
    if not row["deterministic"]:
        problems.append("not deterministic")
    if row["bn"][1] < row["bn"][0]:
        problems.append("fuses BN")
    if not row["io_preserved"]:
        problems.append("I/O changed")
    if not row["metadata_preserved"]:
        problems.append("metadata lost")
    if not row["opset_preserved"]:
        problems.append("opset imports changed")
    if not row["input_untouched"]:
        problems.append("modifies its input")
    if row["quirks_after"].get("shared constants", 0) > row["quirks_before"].get("shared constants", 0):
        problems.append("merges constants (shared weights)")
    diff = row["max_rel_diff"]
    if not isinstance(diff, float) or diff > 1e-4:
        problems.append("outputs differ")
    return "; ".join(problems) or "ok"


def summary(rows: list[dict]) -> list[str]:
    """One line per candidate: every problem it showed on any model, and what it left undone."""
    lines = ["| candidate | problems (on which models) | Constant nodes left | foldable left | no-ops left "
             "| Conv/Gemm arithmetic left | keras_nhwc Transposes | total s |", "|---|---|---|---|---|---|---|---|"]
    for candidate in dict.fromkeys(r["candidate"] for r in rows):
        mine = [r for r in rows if r["candidate"] == candidate]
        problems: dict[str, list[str]] = {}
        for r in mine:
            verdict = _verdict(r)
            if verdict != "ok":
                for p in verdict.split("; "):
                    problems.setdefault(p, []).append(r["model"])
        done = [r for r in mine if "quirks_after" in r]
        left = collections.Counter()
        for r in done:
            left.update(r["quirks_after"])
        noops = sum(left[k] for k in ("Identity", "Dropout", "noop Cast", "noop Transpose"))
        arithmetic = sum(v for k, v in left.items() if "(const)" in k)
        keras = next((f"{r['transposes'][0]} → {r['transposes'][1]}" for r in done if r["model"] == "keras_nhwc"), "")
        text = "; ".join(f"{p} ({', '.join(m)})" for p, m in problems.items()) or "none"
        total = round(sum(r.get("seconds", 0) for r in mine), 2)
        lines.append(f"| {candidate} | {text} | {left['Constant']} | {left['foldable']} | {noops} | {arithmetic} | {keras} | {total} |")
    return lines


DECISION = """## Decision

**onnxscript, configured (`onnxscript_keep_bn`), does the generic part; the ONNX-specific folds
are hand-written (`ours` = that plus them).** onnxscript (with onnx-ir) is added to the project's
dependencies for it.

- `onnxscript_keep_bn` is the only library configuration with no problem on any model here: checker
  full_check ok, standard ONNX only, byte-identical on a second run (and across PYTHONHASHSEED
  values), BN kept, inputs/outputs/opset/metadata kept, no constants merged, the input model
  untouched, outputs equal. It folds everything the brief's passes 1-3 ask for: no Constant
  node, no foldable node and no no-op left on any model. It is the optimizer the PyTorch
  exporter itself uses, and all of it is public API (`onnxscript.optimizer.fold_constants`, the
  named rules of `onnxscript.rewriter.rules.common`, `onnx_ir.passes.common`).
- Not `onnxscript.optimizer.optimize()` itself: its default rules fuse BN into the Conv
  (efficientnet_lite0_bn, resnet20_bn), its initializer deduplication makes two layers share one
  constant (ddddocr_det), and it turns Flatten into Reshape.
- Not onnxruntime's basic level (`optimized_model_filepath`): `disabled_optimizers=["ConvBNFusion",
  "ConstantSharing"]` does keep BN and unshared weights, but the file it writes imports eight extra
  domains (com.microsoft, ai.onnx.ml, ...), rewrites ppocr's input batch dimension -1 as unknown,
  and fuses what it likes (ddddocr's Focus slices became a SpaceToDepth). It is an engine's cache
  format, not a canonical export.
- Not onnxslim, even with BN fusion and weight tying skipped: it modifies the model it is given
  (ppocr_cls), it folds an initializer that is also a graph input and drops that input
  (edge_init_as_input: the caller's override is silently lost), and it writes an invalid model
  from Constant nodes with `value_floats` at opset 21 (edge_constant_attrs: a double constant
  added to a float tensor; the checker and onnxruntime reject it).
- Not onnxoptimizer: its BN fusion writes the fold as graph arithmetic (Sqrt, Div, ...), it merges
  equal initializers even with BN fusion off, and it does not fold computed Reshape targets
  (ppocr_cls keeps 19 foldable nodes).
- No library cancels the NHWC Transposes around every Conv except onnxruntime (which also folds
  Mul/Add into the Conv but leaves the Sub); none folds a conv bias Add with the rules the group
  analysis needs (only when the Conv output has no other reader, the constant channel-wise, never
  into a graph-input weight). Those are hand-written, one small function per pass
  (onnx_lbyl/canonical/folds.py, layout.py, flatten.py), each with its own tests.
"""


def markdown(rows: list[dict], versions: dict[str, str]) -> str:
    lines = ["# Libraries for canonicalisation, measured", "",
             "`python bench/canonical_libraries.py` (bench/canonical_libraries.py says what each column means).",
             "Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".", "",
             "## Summary", "", *summary(rows), "", "## Every run", "",
             "| candidate | model | verdict | checker | deterministic | BN | I/O kept | nodes | Transposes | shared constants | quirks left | max rel diff | s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['candidate']} | {r['model']} | fails: {r['error']} | | | | | | | | | | |")
            continue
        diff = r["max_rel_diff"]
        diff = f"{diff:.1e}" if isinstance(diff, float) else diff
        shared = f"{r['quirks_before'].get('shared constants', 0)} → {r['quirks_after'].get('shared constants', 0)}"
        lines.append(
            f"| {r['candidate']} | {r['model']} | {_verdict(r)} | {'ok' if r['checker'] == 'ok' else 'FAIL'} | "
            f"{'yes' if r['deterministic'] else 'NO'} | {r['bn'][0]} → {r['bn'][1]} | {'yes' if r['io_preserved'] else 'NO'} | "
            f"{r['nodes'][0]} → {r['nodes'][1]} | {r['transposes'][0]} → {r['transposes'][1]} | {shared} | "
            f"{_fmt_quirks(r['quirks_after'])} | {diff} | {r['seconds']} |")
    lines += ["", "Quirks before canonicalisation:", ""]
    seen = set()
    for r in rows:
        if r["model"] in seen or "quirks_before" not in r:
            continue
        seen.add(r["model"])
        lines.append(f"- {r['model']}: {_fmt_quirks(r['quirks_before'])}; Transpose {r['quirks_before'].get('Transpose', 0)}")
    ours = [r for r in rows if r["candidate"] == "ours" and "log" in r]
    if ours:
        lines += ["", "## What canonicalise does to each model", "",
                  "| model | nodes | op counts that changed | log | s |", "|---|---|---|---|---|"]
        for r in ours:
            changed = ", ".join(f"{op} {a} → {b}" for op, (a, b) in r["ops_changed"].items()) or "none (an exact copy)"
            log = "; ".join(r["log"]) or "—"
            lines.append(f"| {r['model']} | {r['nodes'][0]} → {r['nodes'][1]} | {changed} | {log} | {r['seconds']} |")
    lines += ["", DECISION]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", nargs="*", default=list(CANDIDATES))
    parser.add_argument("--models", nargs="*", default=list(REAL_MODELS) + list(SYNTHETIC))
    parser.add_argument("--out", default=str(BENCH / "results" / "canonical_libraries"))
    args = parser.parse_args(argv)
    models = _load_models(args.models)
    rows = []
    for candidate in args.candidates:
        for name, (model, shapes) in models.items():
            row = measure(candidate, name, model, shapes)
            rows.append(row)
            print(f"{candidate:22s} {name:26s} {row.get('error') or _verdict(row)}  "
                  f"{row.get('seconds', '')}s  quirks left: {_fmt_quirks(row.get('quirks_after', {}))}", flush=True)
    versions = {c.split("_")[0]: _version(c) for c in args.candidates}
    versions = {("onnxruntime" if k == "ort" else "onnx_lbyl" if k == "ours" else k): v for k, v in versions.items()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out + ".json").write_text(json.dumps({"versions": versions, "rows": rows}, indent=1) + "\n")
    Path(args.out + ".md").write_text(markdown(rows, versions))
    print(f"written {args.out}.json and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
