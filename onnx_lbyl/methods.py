"""The compression methods, each one object chosen once from a registry.

A method is what the pipeline asks of it: how a chain's removed channels are chosen and
compensated, whether the pre-activation statistics are needed (and their covariance, or the
mean alone), whether it prunes channel groups beyond chains, and whether the expected residual
of the removed channels goes into the next bias. Every module asks these questions of the
`Method` object (`CompressOptions.method_spec`) instead of comparing the method's name, so a
new method is one entry here. This module imports no onnx: the graph code stays apart from
the mathematics, which the chain coefficients below call.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .errors import InputError
from .numerics.compensation import (
    LbylLambdas,
    lbyl_authors_coefficients,
    lbyl_coefficients,
    merge_coefficients,
    moment_coefficients,
    prune_coefficients,
)
from .numerics.folding import ChannelLayer

# S (kept x removed) of one chain from its layer, the channel split, the LBYL weights and Cov(a)
# of the activations (None for the methods that do not ask for the covariance).
ChainCoefficients = Callable[[ChannelLayer, np.ndarray, np.ndarray, LbylLambdas, "np.ndarray | None"], np.ndarray]


def _lbyl(layer: ChannelLayer, kept: np.ndarray, removed: np.ndarray, lambdas: LbylLambdas, cov) -> np.ndarray:
    return lbyl_coefficients(layer, kept, removed, lambdas)


def _merge(layer: ChannelLayer, kept: np.ndarray, removed: np.ndarray, lambdas: LbylLambdas, cov) -> np.ndarray:
    return merge_coefficients(layer, kept, removed)


def _prune(layer: ChannelLayer, kept: np.ndarray, removed: np.ndarray, lambdas: LbylLambdas, cov) -> np.ndarray:
    return prune_coefficients(layer, kept, removed)


def _lbyl_authors(layer: ChannelLayer, kept: np.ndarray, removed: np.ndarray, lambdas: LbylLambdas,
                  cov) -> np.ndarray:
    return lbyl_authors_coefficients(layer, kept, removed, lambdas.lambda1, lambdas.lambda2)


def _moments(layer: ChannelLayer, kept: np.ndarray, removed: np.ndarray, lambdas: LbylLambdas, cov) -> np.ndarray:
    # the predictor of the centred activations; the mean goes into the next bias after
    return moment_coefficients(np.zeros(layer.channels), cov, kept, removed)


@dataclass(frozen=True)
class Method:
    """One compression method and what the pipeline asks of it.

    name: the --method value (also what the report's options record).
    help: its --help text.
    chain_coefficients: S of a chain for the channels the criterion chose; None for the methods
        that solve S together with their choice (greedy_selection, lambdas_per_layer).
    base: for a -mean variant, the method whose coefficients it uses before the mean correction.
    mean_corrected: the expected residual of every removed channel goes into the next bias.
    needs_covariance: Cov(a) of the activations is needed, not only E[a] (the Gaussian model's
        closed form gives both; sources.activation_moments computes the covariance only then).
    greedy_selection: the removed channels are chosen one at a time by the expected error they add
        to the next layer's output, not by --criterion; their removal curves then price a MACs
        target (error allocation), and the report names the criterion "output error (greedy)".
    lambdas_per_layer: LBYL with lambda1/lambda2 chosen per layer from a small grid (no labels).
    prunes_groups: defined on any channel group (residual streams, depthwise, Concat/Split...),
        not only on one producer with its BN (a chain).
    compensates_groups: on a group, the removed channels are predicted from the kept ones by the
        measured moments (otherwise a group's removed channels leave nothing, or only their mean).
    """

    name: str
    help: str
    chain_coefficients: ChainCoefficients | None = None
    base: str | None = None
    mean_corrected: bool = False
    needs_covariance: bool = False
    greedy_selection: bool = False
    lambdas_per_layer: bool = False
    prunes_groups: bool = False
    compensates_groups: bool = False

    @property
    def needs_statistics(self) -> bool:
        """Statistics of the pre-activations are needed (from BN, a data-free probe, or calibration)."""
        return self.mean_corrected or self.needs_covariance


_ENTRIES = (
    Method("moments-greedy",
           "moments, with the removed channels chosen (instead of by --criterion) one at a time "
           "as the one whose removal adds least expected error to the next layer's output",
           mean_corrected=True, needs_covariance=True, greedy_selection=True,
           prunes_groups=True, compensates_groups=True),
    Method("lbyl", "LBYL: every kept channel absorbs part of each removed one (closed-form ridge)",
           chain_coefficients=_lbyl),
    Method("merge", "Neuron Merging: each removed channel is merged into its most similar kept one",
           chain_coefficients=_merge),
    Method("prune", "plain pruning: removed channels leave nothing behind (the baseline)",
           chain_coefficients=_prune, prunes_groups=True),
    Method("lbyl-mean", "LBYL, then the expected residual of each removed channel goes into the next bias",
           chain_coefficients=_lbyl, base="lbyl", mean_corrected=True),
    Method("merge-mean", "Neuron Merging, then the expected residual goes into the next bias",
           chain_coefficients=_merge, base="merge", mean_corrected=True),
    Method("prune-mean", "plain pruning, with each removed channel replaced by its expected value in the next bias",
           chain_coefficients=_prune, base="prune", mean_corrected=True, prunes_groups=True),
    Method("moments",
           "best linear predictor of removed activations from kept ones under a Gaussian model "
           "of the pre-activations (BN statistics), plus the mean correction",
           chain_coefficients=_moments, mean_corrected=True, needs_covariance=True,
           prunes_groups=True, compensates_groups=True),
    Method("lbyl-authors",
           "LBYL exactly as the authors' code: raw-space problem, BN running variance for the std, "
           "diagonal bias term, raw coefficients folded; lambda1/lambda2 are their absolute weights",
           chain_coefficients=_lbyl_authors),
    Method("lbyl-auto",
           "LBYL with lambda1/lambda2 chosen per layer, without labels, as the pair of a small grid "
           "that leaves the least expected next-layer output error under the Gaussian model (the report lists them)",
           needs_covariance=True, lambdas_per_layer=True),
)
# The registry, in the order of the --method choices.
METHODS: dict[str, Method] = {m.name: m for m in _ENTRIES}
DEFAULT_METHOD = "moments-greedy"  # why: README, "Which method is the default"
# The order in which --help explains the methods: the plain ones, their -mean variants, then
# the statistical ones (the choices list keeps the registry's order, the default first).
_HELP_ORDER = ("lbyl", "merge", "prune", "lbyl-mean", "merge-mean", "prune-mean", "moments", "moments-greedy",
               "lbyl-auto", "lbyl-authors")
METHOD_HELP: dict[str, str] = {name: METHODS[name].help for name in _HELP_ORDER}


def method_named(name: str) -> Method:
    """The registry's method called `name`; InputError naming the choices for any other."""
    method = METHODS.get(name) if isinstance(name, str) else None
    if method is None:
        raise InputError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
    return method


def group_methods() -> list[Method]:
    """The methods that prune any group, those that compensate first (the order in which the
    report's reason for leaving a group whole has always listed them)."""
    return sorted((m for m in METHODS.values() if m.prunes_groups), key=lambda m: not m.compensates_groups)
