"""What a user can ask of a compression, with the defaults documented in one place."""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, replace

from .errors import InputError
from .graph.chains import APPROXIMATIONS
from .graph.input_shapes import normalise_input_shapes
from .methods import DEFAULT_METHOD, Method, method_named
from .numerics.compensation import DEFAULT_LAMBDAS
from .numerics.selection import CRITERIA

SCOPES = ("groups", "chains")
ALLOCATIONS = ("error", "uniform", "sensitivity")
DEFAULT_ROUND_TO = 8  # kept channels a multiple of 8: onnxruntime's fast CPU kernels (README, "Speed")
STATISTICS_SOURCES = ("auto", "batchnorm", "probe")
CALIBRATION_FITS = ("activations", "gaussian")
# Beyond this a lambda only overflows the solver's float64 sums (1e308 squared); at 1e6 the
# term it weighs already decides the solution alone.
MAX_LAMBDA = 1e6


@dataclass(frozen=True)
class CompressOptions:
    """Options of one compression run.

    ratio: fraction of output channels removed from every prunable Conv, in [0, 1).
    method: how removed channels are compensated: the name of a method of the registry
        (onnx_lbyl.methods); `method_spec` is that method, which every module asks.
    criterion: which channels are removed (see numerics.selection.CRITERION_HELP).
    seed: seeds the random criterion and the data-free probe's synthetic images.
    lambda1, lambda2: LBYL's weights (numerics.compensation.LbylLambdas says what they mean).
    statistics: where the statistical methods get pre-activation statistics without
        calibration: "probe" (the default: the unpruned model run on synthetic images it picks
        itself, onnx_lbyl.synthetic, with every BN normalising by the batch's own statistics, so
        a BN model's pre-activations keep the means and variances its BNs record while their
        correlations are measured), "batchnorm" (the BN node's gamma/beta, correlations from the
        folded filters as if each conv's input were white), "auto" (batchnorm where the chain
        has a BN node, else probe; the default before the probe was measured against it on the
        development models, bench/results/chain_statistics.md).
    validation_batch: rows of the validation batch when the batch axis is dynamic; None: as many
        as sources.validation_feeds fits in a bounded size (8 to 64 samples).
    max_drift: if set, the largest relative L2 drift of an output on the validation batch that is
        accepted; above it the run fails (ValidationError, exit 1) and nothing is written. Without
        it, a drift above validate.DRIFT_WARNING only adds a warning to the report.
    layer_ratios: (pattern, ratio) pairs overriding `ratio` for chains whose name matches the
        shell-style pattern; the last match wins.
    exclude: patterns of chain names never pruned.
    target_macs: if set, the fraction of the model's MACs to remove, shared out as `allocation`
        says; it replaces `ratio` (layer_ratios and exclude still apply).
    allow_approximate: approximate steps a chain may go through: "maxpool" (MaxPool between
        the activation and the consumer) and "relu6" (Clip(0, 6) as the activation).
    round_to: kept channel counts are rounded up to a multiple of this, never above the layer's
        width (so a layer of at most round_to channels stays whole). The default 8 keeps every Conv
        on onnxruntime's blocked (NCHWc) CPU kernels, which want input channels that are multiples
        of 4 and pad output channels to the SIMD block (8 with AVX2); measured in
        bench/results/latency.json. 1 keeps the exact count floor(n (1 - ratio)), the papers'
        protocol (bench/accuracy.py, bench/tuned_lbyl.py).
    calibration: optional unlabeled inputs for the statistical methods: an .npz path or a dict
        of arrays, either named like the model's inputs (used as they are) or a single
        `images` array (uint8 pixels, or floats in [0, 1]) that gets the model's preprocessing
        from its `lbyl_eval.preprocess` metadata. With it every chain's statistics are measured
        on these inputs (replacing BN statistics and the synthetic probe). Never required.
    calibration_fit: with calibration data, "activations" fits the compensation by least
        squares (with intercept) on the measured activations themselves; "gaussian" uses only
        the measured mean/covariance of the pre-activations in the Gaussian model.
    scope: "groups" prunes every channel group the analysis proves safe (residual streams,
        depthwise blocks, squeeze-excitation, Concat/Split, any activation; groups.graph);
        "chains" only Conv/Gemm/MatMul -> [BN] -> Relu -> Conv chains whose middle nothing
        else reads (the papers' protocol: block-internal layers of a ResNet).
    allocation: how a `target_macs` is shared out (with moments-greedy; other methods use
        "uniform"). "sensitivity" (default): as "error", with each layer's prices rescaled by
        the model's output drift measured when that layer alone is pruned to half
        (onnx_lbyl.sensitivity; one extra model run per layer); chosen on the development models,
        bench/results/sensitivity_allocation.md. "error": each layer's channels go in the order
        and amount whose expected output error per MAC saved, at its own consumers, is lowest
        across the model (planning.allocate); "uniform": one ratio for every layer (the papers'
        protocol).
    input_shapes: (input name, full shape) pairs (CLI `--input-shape NAME:d0,d1,...`) for
        inputs with dynamic dimensions: the probe, the validation batch and the MACs use them.
        A dynamic batch (the first dimension) stays dynamic; graph.input_shapes says the rest.
        A dict {name: shape} is taken too; check() returns the tuple form.
    """

    ratio: float = 0.3
    method: str = DEFAULT_METHOD
    criterion: str = "l2"
    seed: int = 0
    lambda1: float = DEFAULT_LAMBDAS.lambda1
    lambda2: float = DEFAULT_LAMBDAS.lambda2
    validation_batch: int | None = None
    max_drift: float | None = None
    statistics: str = "probe"
    layer_ratios: tuple[tuple[str, float], ...] = ()
    exclude: tuple[str, ...] = ()
    target_macs: float | None = None
    allow_approximate: tuple[str, ...] = ()
    round_to: int = DEFAULT_ROUND_TO  # why: bench/results/latency.json, README "Speed"
    calibration: object = None  # str | os.PathLike | dict[str, np.ndarray] | None
    calibration_fit: str = "activations"
    scope: str = "groups"
    allocation: str = "sensitivity"  # chosen on the development models: bench/results/sensitivity_allocation.md
    input_shapes: tuple[tuple[str, tuple[int, ...]], ...] = ()

    @property
    def method_spec(self) -> Method:
        """The registry's entry for `method` (the name stays the field, as the report records it)."""
        return method_named(self.method)

    def check(self) -> "CompressOptions":
        """Raise InputError naming the first option that is out of range."""
        if not isinstance(self.ratio, (int, float)) or not math.isfinite(self.ratio) or not 0 <= self.ratio < 1:
            raise InputError(f"ratio must be a number in [0, 1), got {self.ratio!r}")
        method_named(self.method)
        if self.criterion not in CRITERIA:
            raise InputError(f"unknown criterion {self.criterion!r}; choose from {', '.join(CRITERIA)}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2 ** 63:
            raise InputError(f"seed must be a whole number in [0, 2^63), got {self.seed!r}")
        for name in ("lambda1", "lambda2"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or not 0 <= value <= MAX_LAMBDA:
                raise InputError(f"{name} must be a number in [0, {MAX_LAMBDA:g}], got {value!r}")
        if self.allocation not in ALLOCATIONS:
            raise InputError(f"unknown allocation {self.allocation!r}; choose from {', '.join(ALLOCATIONS)}")
        if self.scope not in SCOPES:
            raise InputError(f"unknown scope {self.scope!r}; choose from {', '.join(SCOPES)}")
        if self.statistics not in STATISTICS_SOURCES:
            raise InputError(f"unknown statistics source {self.statistics!r}; choose from {', '.join(STATISTICS_SOURCES)}")
        for pattern, value in self.layer_ratios:
            if not math.isfinite(value) or not 0 <= value < 1:
                raise InputError(f"ratio for {pattern!r} must be a number in [0, 1), got {value!r}")
        if self.target_macs is not None and not (math.isfinite(self.target_macs) and 0 < self.target_macs < 1):
            raise InputError(f"target MACs reduction must be a fraction in (0, 1), got {self.target_macs!r}")
        unknown = sorted(set(self.allow_approximate) - set(APPROXIMATIONS))
        if unknown:
            raise InputError(f"unknown approximation {unknown[0]!r}; choose from {', '.join(APPROXIMATIONS)}")
        if self.calibration_fit not in CALIBRATION_FITS:
            raise InputError(f"unknown calibration fit {self.calibration_fit!r}; choose from {', '.join(CALIBRATION_FITS)}")
        if self.calibration is not None and not isinstance(self.calibration, (dict, str, os.PathLike)):
            raise InputError("calibration must be an .npz path or a dict of arrays")
        if isinstance(self.calibration, (str, os.PathLike)) and not os.path.isfile(self.calibration):
            raise InputError(f"calibration file not found: {self.calibration}")
        if not isinstance(self.round_to, int) or self.round_to < 1:
            raise InputError(f"round-to must be a whole number >= 1, got {self.round_to!r}")
        if self.validation_batch is not None and (not isinstance(self.validation_batch, int)
                                                  or self.validation_batch < 1):
            raise InputError(f"validation batch must be a whole number >= 1, got {self.validation_batch!r}")
        if self.max_drift is not None and not (isinstance(self.max_drift, (int, float))
                                               and math.isfinite(self.max_drift) and self.max_drift >= 0):
            raise InputError(f"max-drift must be a finite number >= 0, got {self.max_drift!r}")
        shapes = normalise_input_shapes(self.input_shapes)  # the model checks them (pipeline)
        return self if shapes == self.input_shapes else replace(self, input_shapes=shapes)

    def to_dict(self) -> dict:
        """JSON-ready: a calibration given as arrays is recorded by its shapes only."""
        data = asdict(replace(self, calibration=None))
        if isinstance(self.calibration, dict):
            data["calibration"] = {k: list(getattr(v, "shape", ())) for k, v in self.calibration.items()}
        elif self.calibration is not None:
            data["calibration"] = str(self.calibration)
        return data
