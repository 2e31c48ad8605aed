"""Choosing the channels to remove by the output error they cause (greedy sequential elimination).

The l2-norm criterion looks only at Conv1's filters: it ignores how well the other channels
can stand in for a channel, and how strongly the next layer reads it. Here the choice is made
on the quantity the `moments` compensation minimises, the expected error of the next layer's
output. With a = the chain's activations (covariance Sigma), G the next layer's weight with
one row per input channel (G[j] = W2[:, j, ...] flattened, energy e_j = ||G[j]||^2), K the
kept set and P = Sigma_K^{-1}:

    removing j from K and folding its best linear predictor from K \\ j,
        beta = -P[K\\j, j] / P[j, j],   G[K\\j] += beta G[j],
    adds  ||G[j]||^2 / P[j, j] = e_j * Var(a_j | a_{K\\j})  to the expected squared output error,

and this increase is exact, not a bound: the new residual lies in span(a_K) and is uncorrelated
with every earlier residual (which is orthogonal to span(a_K)), so the step errors add up.
The greedy step removes the j with the smallest increase, folds it, and downdates P by the
rank-one formula P' = P[-j, -j] - P[-j, j] P[j, -j] / P[j, j] (O(n^2 + n m) per step, m the
size of a row of G). Since projections onto nested subspaces compose, the total coefficients
folded into the kept rows equal the joint best linear predictor of all removed channels from
the final kept set, i.e. `moment_coefficients` for that set (tests/test_selection_output.py).

Spatial kernels: a 3x3 consumer reads each channel at nine positions. The error above treats
the nine reads of a channel as if they were independent copies with covariance Sigma (the
cross-position correlations are not modelled), which makes the error of channel j's kernel
simply its squared Frobenius norm times the conditional variance. For 1x1 convolutions and
Gemm consumers over a pooled/flattened block this is exact; otherwise it is an approximation
of the selection score only, not of the folded weights (those are the moments solution).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg


MAX_STEPS = 64  # a layer losing more channels removes them in blocks (see greedy_output_elimination)


def _precision(cov: np.ndarray, ridge: float) -> np.ndarray:
    """(cov + ridge I)^{-1} via Cholesky (the tiny ridge keeps collinear sets defined)."""
    c = np.array(cov, dtype=np.float64)
    c[np.diag_indices_from(c)] += ridge
    factor = scipy.linalg.cho_factor(c)
    return scipy.linalg.cho_solve(factor, np.eye(c.shape[0]))


def greedy_output_elimination(
    activation_cov: np.ndarray,
    next_weight: np.ndarray,
    keep: int,
    axis: int = 1,
    jitter: float = 1e-9,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Remove channels one at a time, each time the one whose removal (with its best linear
    predictor folded into the others) increases the expected output error least.

    activation_cov: (n, n) covariance of the chain's activations a = ReLU(z).
    next_weight: the consumer's weight, input-channel axis `axis` (Conv layout: axis 1).
    keep: how many channels stay.
    Returns (kept, removed, coefficients, step_errors): kept and removed sorted ascending,
    coefficients the (|kept| x |removed|) matrix S of compensation.fold_into_next_layer
    (columns in the order of `removed`), step_errors the error increase of each step in
    removal order (so their sum is the model's expected squared output error). A layer
    removing more than MAX_STEPS channels removes ceil(r / MAX_STEPS) per step, each block
    chosen by the single-channel costs and folded jointly.
    """
    n = activation_cov.shape[0]
    rows = np.moveaxis(np.asarray(next_weight, dtype=np.float64), axis, 0).reshape(n, -1)
    kept, removed, coefficients, errors = greedy_group_elimination([ReadView(activation_cov, rows @ rows.T)], keep,
                                                                   jitter)
    return kept, removed, coefficients[0], errors


@dataclass(frozen=True)
class ReadView:
    """One consumer's view of a channel group: the covariance of the n channels it reads and
    the Gram matrix of their outgoing weights in it (rows @ rows.T, one row of the consumer's
    weights per channel: all the elimination needs of them), with a weight for the sum over
    consumers."""

    cov: np.ndarray
    gram: np.ndarray
    weight: float = 1.0


def energy_weighted_view(cov: np.ndarray, rows: np.ndarray) -> ReadView:
    """A consumer's ReadView from its rows (one per channel), weighted by 1 / its expected
    output energy tr(Cov G G^T), so that consumers of different scales count alike when their
    errors are summed (groups, and the budget's curves)."""
    gram = rows @ rows.T
    return ReadView(cov, gram, 1.0 / max(float(np.sum(cov * gram)), 1e-30))


class _ViewState:
    """Precision, Gram matrix and folded coefficients of one view as channels leave."""

    def __init__(self, view: ReadView, remove: int, jitter: float) -> None:
        n = view.cov.shape[0]
        self.cov = view.cov
        self.weight = view.weight
        # Gram matrix of the effective rows (what each still-kept channel carries after the folds):
        # a fold g_t += beta_t g_j changes it by a rank-two update, O(n^2) a step instead of
        # O(n m) for the rows themselves, which are never needed (coef gives the folded weights).
        self.gram = view.gram  # never written: each step replaces it by an updated submatrix
        self.ridge = jitter * max(float(np.mean(np.diag(view.cov))) if n else 0.0, 1e-30)
        self.precision = _precision(view.cov, self.ridge)
        self.coef = np.zeros((n, remove))  # coef[i, s]: how much of the s-th removed row channel i carries

    def cost(self) -> np.ndarray:
        return np.diag(self.gram) / np.diag(self.precision)

    def remove(self, pick: np.ndarray, rest: np.ndarray, done: int, alive: np.ndarray) -> float:
        """Fold the block `pick` into `rest`; return the error it adds (unweighted)."""
        take = pick.size
        p_jj = self.precision[np.ix_(pick, pick)]
        p_oj = self.precision[np.ix_(rest, pick)]
        inverse = np.linalg.inv(p_jj)  # take x take; Cov of the block's residual
        beta = -p_oj @ inverse  # best linear predictor of the block from the rest
        g_oj, g_jj = self.gram[np.ix_(rest, pick)], self.gram[np.ix_(pick, pick)]
        error = float(np.trace(g_jj @ inverse))
        # fold: rows_O += beta rows_J, in the Gram matrix and in the bookkeeping. The Gram
        # update G_OO + beta G_OJ^T + G_OJ beta^T + beta G_JJ beta^T is beta H^T + H beta^T
        # with H = G_OJ + beta G_JJ / 2: one product, added in place (_add_product)
        half = g_oj + 0.5 * beta @ g_jj
        self.gram = _add_product(_submatrix(self.gram, rest), np.hstack([beta, half]), np.hstack([half, beta]))
        carried = self.coef[pick, :done]
        self.coef = self.coef[rest]
        self.coef[:, :done] += beta @ carried
        self.coef[:, done:done + take] = beta
        # P is positive definite, so its largest entry in magnitude is on its diagonal
        before = float(np.max(np.diag(self.precision)))
        self.precision = _add_product(_submatrix(self.precision, rest), p_oj, beta)  # = P_OO - P_OJ P_JJ^-1 P_JO
        survivors = alive[rest]
        if survivors.size and float(np.max(np.diag(self.precision))) < REFRESH * before:
            self.precision = _precision(self.cov[np.ix_(survivors, survivors)], self.ridge)
        return error


def _submatrix(matrix: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """matrix[np.ix_(keep, keep)], as two takes: the same copy, 1.6x faster on a 2048-wide
    group, where these copies are most of a step's time."""
    return matrix.take(keep, axis=0).take(keep, axis=1)


def _add_product(target: np.ndarray, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """target + left @ right.T for a C-ordered `target` whose sum is symmetric, computed in
    place by BLAS (no n x n temporary: on a 2048-wide residual stream the temporaries, not the
    arithmetic, were most of the greedy's time). A symmetric result is its own transpose, so
    the Fortran-ordered view target.T receives right @ left.T, which is the same matrix."""
    if target.size == 0:
        return target
    out = scipy.linalg.blas.dgemm(1.0, right, left, beta=1.0, c=target.T, trans_b=True, overwrite_c=True)
    return out.T


REFRESH = 1e-6  # recompute P from scratch when a downdate cancels this much


def removal_curve(views: list[ReadView], keep: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """How the weighted expected output error grows as greedy_group_elimination removes
    channels down to `keep`: (channels removed in each step, error each step adds). A budget
    allocator compares these prices across layers (planning.allocate)."""
    *_, errors, sizes = greedy_group_elimination(views, keep, with_steps=True)
    return sizes, errors


def greedy_group_elimination(
    views: list[ReadView], keep: int, jitter: float = 1e-9, with_steps: bool = False
) -> tuple:
    """greedy_output_elimination for a channel group read by several consumers: each step
    removes the channel (or block) whose removal adds the least weighted sum of expected output
    errors over the views, and folds its best linear predictor into every view separately
    (each consumer reads its own tensor, so each has its own covariance and coefficients).

    Returns (kept, removed, coefficients per view, step_errors), as greedy_output_elimination;
    step_errors are the weighted sums; `with_steps` adds the number of channels of each step.
    """
    n = views[0].cov.shape[0]
    keep = int(min(max(keep, 0), n))
    # Channels go in blocks of `block` per step (one at a time while a layer loses at most
    # MAX_STEPS channels): a block's joint conditional update is BLAS-3 work, which keeps wide
    # layers (a 4096-wide classifier) to MAX_STEPS steps instead of thousands of O(n^2) ones.
    # Row i of every view's matrices describes channel alive[i].
    remove = n - keep
    block = max(1, -(-remove // MAX_STEPS))
    states = [_ViewState(view, remove, jitter) for view in views]
    alive = np.arange(n)
    order, errors, sizes = [], [], []
    done = 0
    while done < remove:
        cost = sum(state.weight * state.cost() for state in states)
        take = min(block, remove - done)
        pick = np.lexsort((alive, cost))[:take]  # lowest cost first; equal costs by channel index
        rest = np.ones(alive.size, dtype=bool)
        rest[pick] = False
        rest = np.flatnonzero(rest)
        errors.append(sum(state.weight * state.remove(pick, rest, done, alive) for state in states))
        order.extend(int(c) for c in alive[pick])
        sizes.append(take)
        alive = alive[rest]
        done += take
    rows_sorted = np.argsort(alive)
    columns_sorted = np.argsort(np.asarray(order, dtype=np.int64))
    kept = alive[rows_sorted]
    removed = np.sort(np.asarray(order, dtype=np.int64))
    coefficients = [state.coef[np.ix_(rows_sorted, columns_sorted)] for state in states]
    if with_steps:
        return kept, removed, coefficients, np.asarray(errors), np.asarray(sizes, dtype=np.int64)
    return kept, removed, coefficients, np.asarray(errors)
