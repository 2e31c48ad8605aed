"""Small ONNX models built inside the tests, so no test needs a file it did not make."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def _init(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array, dtype=np.float32), name)


def chain_model(
    w1: np.ndarray,
    w2: np.ndarray,
    b1: np.ndarray | None = None,
    b2: np.ndarray | None = None,
    bn: dict | None = None,
    height: int = 6,
    relu_also_to_output: bool = False,
    weight1_as_input: bool = False,
    share_weight1: bool = False,
    group: int = 1,
) -> onnx.ModelProto:
    """x -> Conv1(w1, b1) -> [BatchNormalization(bn)] -> Relu -> Conv2(w2, b2) -> y.

    bn: dict with gamma, beta, mean, var (arrays) and eps. The switches build the
    negative cases: the Relu output also a graph output, Conv1's weight fed as a graph input,
    Conv2's weight read by a second Conv.
    """
    c_in = w1.shape[1] * group
    kernel = w1.shape[2]
    pads = [kernel // 2] * 4
    inits = [_init("w2", w2)]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", c_in, height, height])]
    out_shape = ["batch", w2.shape[0], height, height]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)]
    if weight1_as_input:
        inputs.append(helper.make_tensor_value_info("w1", TensorProto.FLOAT, list(w1.shape)))
    else:
        inits.append(_init("w1", w1))
    conv1_inputs = ["x", "w1"]
    if b1 is not None:
        inits.append(_init("b1", b1))
        conv1_inputs.append("b1")
    nodes = [helper.make_node("Conv", conv1_inputs, ["u"], name="conv1", pads=pads, group=group)]
    relu_in = "u"
    if bn is not None:
        for key in ("gamma", "beta", "mean", "var"):
            inits.append(_init(f"bn_{key}", bn[key]))
        nodes.append(helper.make_node(
            "BatchNormalization", ["u", "bn_gamma", "bn_beta", "bn_mean", "bn_var"], ["z"],
            name="bn1", epsilon=float(bn.get("eps", 1e-5))))
        relu_in = "z"
    nodes.append(helper.make_node("Relu", [relu_in], ["a"], name="relu1"))
    conv2_inputs = ["a", "w2"]
    if b2 is not None:
        inits.append(_init("b2", b2))
        conv2_inputs.append("b2")
    k2 = w2.shape[2]
    nodes.append(helper.make_node("Conv", conv2_inputs, ["y"], name="conv2", pads=[k2 // 2] * 4))
    if relu_also_to_output:
        outputs.append(helper.make_tensor_value_info("a", TensorProto.FLOAT, ["batch", w1.shape[0], height, height]))
    if share_weight1:
        nodes.append(helper.make_node("Conv", ["x", "w1"], ["y2"], name="conv1_twin", pads=pads, group=group))
        outputs.append(helper.make_tensor_value_info("y2", TensorProto.FLOAT, ["batch", w1.shape[0], height, height]))
    graph = helper.make_graph(nodes, "chain", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def random_bn(rng: np.random.Generator, n: int) -> dict:
    """BN statistics that are far from identity, so folding matters."""
    return {
        "gamma": rng.uniform(0.5, 2.0, n) * rng.choice([-1, 1], n, p=[0.2, 0.8]),
        "beta": rng.normal(0.2, 0.5, n),
        "mean": rng.normal(0.0, 0.5, n),
        "var": rng.uniform(0.3, 3.0, n),
        "eps": 1e-5,
    }


def fold_bn(w1: np.ndarray, b1: np.ndarray | None, bn: dict) -> tuple[np.ndarray, np.ndarray]:
    """The same function as Conv(w1, b1)->BN, as one Conv: what PyTorch's default export does."""
    scale = bn["gamma"] / np.sqrt(bn["var"] + bn["eps"])
    bias = np.zeros(w1.shape[0]) if b1 is None else b1
    return w1 * scale[:, None, None, None], bn["beta"] + scale * (bias - bn["mean"])


def run(model: onnx.ModelProto, x: np.ndarray, dtype: type = np.float32) -> list[np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x.astype(dtype)})


def multiple_case(rng: np.random.Generator, with_bn: bool, c: float = 0.5) -> onnx.ModelProto:
    """MATH.md §8's exact case: a 4-channel chain where channel 3's folded filter and bias are
    c times channel 0's and channel 3 has the smallest folded norm, so ratio 0.25 with the l2
    criterion removes exactly channel 3. With BN, its statistics are consistent with
    z_3 = c z_0 (beta_3 = c beta_0, gamma_3 = c gamma_0), as in any network where that holds."""
    n, c_in, m = 4, 3, 5
    folded_w = rng.standard_normal((n, c_in, 3, 3))
    folded_w *= 2.0 / np.linalg.norm(folded_w.reshape(n, -1), axis=1)[:, None, None, None]
    folded_b = rng.normal(0.3, 0.2, n)
    folded_w[3], folded_b[3] = c * folded_w[0], c * folded_b[0]
    w2 = rng.standard_normal((m, n, 3, 3))
    if not with_bn:
        return chain_model(folded_w, w2, b1=folded_b)
    bn = random_bn(rng, n)
    bn["gamma"][3], bn["beta"][3] = c * bn["gamma"][0], c * bn["beta"][0]
    scale = bn["gamma"] / np.sqrt(bn["var"] + bn["eps"])
    # the raw parameters whose BN-folded form is (folded_w, folded_b)
    w1 = folded_w / scale[:, None, None, None]
    b1 = (folded_b - bn["beta"]) / scale + bn["mean"]
    return chain_model(w1, w2, b1=b1, bn=bn)
