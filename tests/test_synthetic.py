"""The data-free probe's synthetic images and how the model picks among them (onnx_lbyl.synthetic)."""
from __future__ import annotations

import numpy as np
import onnx
import onnx.parser

from builders import chain_model, run
from onnx_lbyl.graph.probe import classifier_scores
from onnx_lbyl.sources import PROBE_BATCH, PROBE_POOL, _to_model_input, synthetic_feeds
from onnx_lbyl.synthetic import dead_leaves, recognised_rows, synthetic_pool


def _classifier(batch: str = "N", seed: int = 0) -> onnx.ModelProto:
    """x (batch, 3, 8, 8) -> Conv -> Relu -> GlobalAveragePool -> Flatten -> Gemm -> (batch, 4) scores."""
    rng = np.random.default_rng(seed)
    text = f"""
    <ir_version: 8, opset_import: ["" : 17]>
    net (float[{batch}, 3, 8, 8] x) => (float[{batch}, 4] y) {{
        u = Conv <pads = [1, 1, 1, 1]> (x, w1, b1)
        a = Relu (u)
        p = GlobalAveragePool (a)
        f = Flatten (p)
        y = Gemm <transB = 1> (f, w2, b2)
    }}"""
    model = onnx.parser.parse_model(text)
    for name, shape in (("w1", (6, 3, 3, 3)), ("b1", (6,)), ("w2", (4, 6)), ("b2", (4,))):
        model.graph.initializer.append(onnx.numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name))
    onnx.checker.check_model(model, full_check=True)
    return model


def test_recognised_rows_take_the_most_confident_of_each_class_in_turn():
    scores = np.array([
        [5.0, 0, 0],  # class 0, confident
        [1.0, 0, 0],  # class 0, unsure
        [0, 9.0, 0],  # class 1, most confident of all
        [0, 3.0, 0],  # class 1
        [0, 2.0, 0],  # class 1
        [0, 0, 4.0],  # class 2
    ])
    assert recognised_rows(scores, 4).tolist() == [0, 2, 5, 1]
    assert recognised_rows(scores, 6).tolist() == [0, 2, 5, 1, 3, 4]
    assert recognised_rows(scores, 99).size == 6
    # probabilities rank as their logits do
    probabilities = np.exp(scores) / np.exp(scores).sum(axis=1, keepdims=True)
    assert recognised_rows(probabilities, 5).tolist() == recognised_rows(scores, 5).tolist()


def test_dead_leaves_are_covered_piecewise_constant_images_in_range():
    images = dead_leaves((3, 3, 16, 16), np.random.default_rng(0), alpha=2.0)
    assert images.shape == (3, 3, 16, 16)
    assert np.all((images >= 0) & (images <= 1)) and not np.isnan(images).any()
    for image in images:  # flat discs: far fewer distinct colours than pixels
        assert len({tuple(p) for p in image.reshape(3, -1).T}) < 16 * 16 / 4
    again = dead_leaves((3, 3, 16, 16), np.random.default_rng(0), alpha=2.0)
    assert np.array_equal(images, again)


def test_synthetic_pool_mixes_gaussian_fields_and_dead_leaves():
    pool = synthetic_pool((10, 3, 8, 8), np.random.default_rng(1))
    assert pool.shape == (10, 3, 8, 8) and np.all((pool >= 0) & (pool <= 1))


def test_a_classifier_picks_its_probe_images_class_by_class():
    """The probe batch is the pool's rows that recognised_rows picks from the model's own scores."""
    model = _classifier()
    x = synthetic_feeds(model, seed=0)["x"]
    assert x.shape == (PROBE_BATCH, 3, 8, 8) and x.dtype == np.float32
    pool = _to_model_input(model, synthetic_pool((PROBE_POOL, 3, 8, 8), np.random.default_rng(0)), np.float32)
    picked = np.sort(recognised_rows(run(model, pool)[0], PROBE_BATCH))
    assert np.array_equal(x, pool[picked])
    assert np.array_equal(x, synthetic_feeds(model, seed=0)["x"])  # seeded


def test_a_fixed_batch_axis_gets_whole_batches():
    feeds = synthetic_feeds(_classifier(batch="5"), seed=0)
    assert feeds["x"].shape[0] % 5 == 0 and feeds["x"].shape[0] >= PROBE_BATCH


def test_a_model_without_class_scores_gets_a_random_share_of_the_pool():
    rng = np.random.default_rng(2)
    model = chain_model(rng.standard_normal((4, 3, 3, 3)), rng.standard_normal((2, 4, 3, 3)))
    assert classifier_scores(model, {"x": np.zeros((3, 3, 6, 6), np.float32)}) is None
    x = synthetic_feeds(model, seed=0)["x"]
    assert x.shape == (PROBE_BATCH, 3, 6, 6)
    assert np.allclose(x.mean(axis=(0, 2, 3)), 0, atol=0.5)  # standardised over the pool, not the share


def _mlp(hidden: int = 20) -> onnx.ModelProto:
    """x (N, 1, 4, 4) -> Flatten -> Gemm(16 -> hidden) -> Relu -> Gemm(hidden -> 3)."""
    rng = np.random.default_rng(4)
    model = onnx.parser.parse_model(f"""
    <ir_version: 8, opset_import: ["" : 17]>
    mlp (float[N, 1, 4, 4] x) => (float[N, 3] y) {{
        f = Flatten (x)
        h = Gemm <transB = 1> (f, w1, b1)
        a = Relu (h)
        y = Gemm <transB = 1> (a, w2, b2)
    }}""")
    for name, shape in (("w1", (hidden, 16)), ("b1", (hidden,)), ("w2", (3, hidden)), ("b2", (3,))):
        model.graph.initializer.append(onnx.numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name))
    return model


def test_a_dense_chain_gets_enough_probe_images_for_its_covariance(monkeypatch):
    """One sample per image: a Gemm chain of n channels is probed with SAMPLES_PER_CHANNEL * n
    images (a Conv chain gets thousands of samples from PROBE_BATCH images already)."""
    import onnx_graphsurgeon as gs

    from onnx_lbyl import CompressOptions, sources
    from onnx_lbyl.graph.chains import find_chains

    model = _mlp(hidden=20)
    chains, _ = find_chains(gs.import_onnx(model), {"x"}, frozenset())
    seen = {}
    monkeypatch.setattr(sources, "probe_statistics", lambda m, c, feeds, **kw: seen.setdefault("x", feeds["x"]))
    sources.probe_chains(model, chains, CompressOptions())
    assert seen["x"].shape == (sources.SAMPLES_PER_CHANNEL * 20, 1, 4, 4)
    monkeypatch.setattr(sources, "PROBE_MAX_VALUES", 16 * 40)  # the cap: at most 40 images of 16 numbers
    assert sources.synthetic_feeds(model, 0, rows=1000)["x"].shape[0] == 40
    monkeypatch.setattr(sources, "PROBE_MAX_VALUES", 16)  # never fewer than PROBE_BATCH
    assert sources.synthetic_feeds(model, 0, rows=1000)["x"].shape[0] == PROBE_BATCH
