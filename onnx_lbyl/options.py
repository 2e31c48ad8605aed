"""What a user can ask of a compression, with the defaults documented in one place."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from .errors import InputError
from .graph.chains import APPROXIMATIONS
from .numerics.compensation import DEFAULT_LAMBDAS
from .numerics.selection import CRITERIA

METHODS = ("lbyl", "merge", "prune", "lbyl-mean", "merge-mean", "prune-mean", "moments")
METHOD_HELP = {
    "lbyl": "LBYL: every kept channel absorbs part of each removed one (closed-form ridge)",
    "merge": "Neuron Merging: each removed channel is merged into its most similar kept one",
    "prune": "plain pruning: removed channels leave nothing behind (the baseline)",
    "lbyl-mean": "LBYL, then the expected residual of each removed channel goes into the next bias",
    "merge-mean": "Neuron Merging, then the expected residual goes into the next bias",
    "prune-mean": "plain pruning, with each removed channel replaced by its expected value in the next bias",
    "moments": "best linear predictor of removed activations from kept ones under a Gaussian model "
    "of the pre-activations (BN statistics), plus the mean correction",
}
# Methods that need statistics of the pre-activations (from BN, or from a data-free probe).
STATISTICAL_METHODS = ("lbyl-mean", "merge-mean", "prune-mean", "moments")
STATISTICS_SOURCES = ("auto", "batchnorm", "probe")


@dataclass(frozen=True)
class CompressOptions:
    """Options of one compression run.

    ratio: fraction of output channels removed from every prunable Conv, in [0, 1).
    method: how removed channels are compensated (see METHOD_HELP).
    criterion: which channels are removed (see numerics.selection.CRITERION_HELP).
    seed: seeds the random criterion (and nothing else).
    lambda1, lambda2: LBYL's weights (numerics.compensation.LbylLambdas says what they mean).
    statistics: where the statistical methods get pre-activation statistics: "batchnorm"
        (the BN node's gamma/beta), "probe" (the unpruned model run on standard-normal
        synthetic input), "auto" (BN where the chain has one, else probe).
    validation_batch: rows of the random validation batch when the batch axis is dynamic.
    layer_ratios: (pattern, ratio) pairs overriding `ratio` for chains whose name matches the
        shell-style pattern; the last match wins.
    exclude: patterns of chain names never pruned.
    target_macs: if set, the fraction of the model's MACs to remove; the uniform ratio that
        reaches it replaces `ratio` (layer_ratios and exclude still apply).
    allow_approximate: approximate steps a chain may go through: "maxpool" (MaxPool between
        the activation and the consumer) and "relu6" (Clip(0, 6) as the activation).
    """

    ratio: float = 0.3
    method: str = "lbyl"
    criterion: str = "l2"
    seed: int = 0
    lambda1: float = DEFAULT_LAMBDAS.lambda1
    lambda2: float = DEFAULT_LAMBDAS.lambda2
    validation_batch: int = 8
    statistics: str = "auto"
    layer_ratios: tuple[tuple[str, float], ...] = ()
    exclude: tuple[str, ...] = ()
    target_macs: float | None = None
    allow_approximate: tuple[str, ...] = ()

    def check(self) -> "CompressOptions":
        """Raise InputError naming the first option that is out of range."""
        if not isinstance(self.ratio, (int, float)) or not math.isfinite(self.ratio) or not 0 <= self.ratio < 1:
            raise InputError(f"ratio must be a number in [0, 1), got {self.ratio!r}")
        if self.method not in METHODS:
            raise InputError(f"unknown method {self.method!r}; choose from {', '.join(METHODS)}")
        if self.criterion not in CRITERIA:
            raise InputError(f"unknown criterion {self.criterion!r}; choose from {', '.join(CRITERIA)}")
        for name in ("lambda1", "lambda2"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise InputError(f"{name} must be a finite number >= 0, got {value!r}")
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
        if self.validation_batch < 1:
            raise InputError(f"validation batch must be at least 1, got {self.validation_batch}")
        return self

    def to_dict(self) -> dict:
        return asdict(self)
