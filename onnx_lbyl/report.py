"""What a compression did, for people (a summary table) and for scripts (JSON)."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from .latency import LatencyComparison
from .methods import METHODS
from .validate import ValidationResult


@dataclass
class LayerReport:
    """One pruned chain: which Conv lost channels and which one absorbed them."""

    name: str
    next_layer: str
    has_batchnorm: bool
    channels_before: int
    channels_after: int
    removed: list[int]
    compensated: int  # removed channels that left something behind (non-zero coefficients)
    approximations: list[str] = field(default_factory=list)  # steps where compensation is not exact
    lambdas: list[float] | None = None  # lbyl-auto: the (lambda1, lambda2) this layer chose
    kind: str = "chain"  # "chain" (one producer, one consumer) or "group" (any channel group)
    producers: int = 1  # layers that lose these output channels
    macs: int | None = None  # MACs/sample of the layers whose channels it narrows, before pruning


@dataclass
class CandidateReport:
    """A chain or group the analysis found prunable (before any channel is chosen)."""

    name: str
    kind: str  # "chain" or "group"
    channels: int
    read_by: str
    producers: int = 1
    macs: int | None = None  # MACs/sample of the layers whose channels it narrows


@dataclass
class SkippedReport:
    name: str
    reason: str
    macs: int | None = None  # MACs of the layers whose channels it would narrow (None: unknown)


@dataclass
class CompressionReport:
    tool_version: str
    options: dict
    input: str | None = None
    output: str | None = None
    layers: list[LayerReport] = field(default_factory=list)
    skipped: list[SkippedReport] = field(default_factory=list)
    parameters_before: int = 0
    parameters_after: int = 0
    macs_before: int | None = 0  # None: unknown (graph.cost)
    macs_after: int | None = 0
    validation: ValidationResult | None = None
    seconds: float = 0.0
    latency: LatencyComparison | None = None  # only when asked for (CLI --benchmark)
    canonicalised: list[str] = field(default_factory=list)  # what canonical.canonicalise changed first
    plan: str = ""  # what set the kept counts: the ratio, or the MACs target and the ratio it led to
    outcome: str = "pruned"  # "pruned", "refused" (exit 2), "failed validation" (exit 1) or "inspected"
    error: str | None = None  # the one-line message of a refusal or failure
    candidates: list[CandidateReport] = field(default_factory=list)  # what the analysis found prunable
    warnings: list[str] = field(default_factory=list)  # also printed on stderr (e.g. a large output drift)

    @property
    def chains_found(self) -> int:
        return len(self.layers)

    @property
    def chains_pruned(self) -> int:
        return sum(1 for layer in self.layers if layer.removed)

    def count(self, kind: str) -> int:
        return sum(1 for layer in self.layers if layer.kind == kind)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["chains_found"] = self.chains_found
        data["chains_pruned"] = self.chains_pruned
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    def summary(self) -> str:
        """A readable account: per-layer channels, sizes before/after, output drift."""
        lines = [
            f"onnx-lbyl {self.tool_version}: method={self.options['method']} "
            f"criterion={'output error (greedy)' if _greedy(self.options['method']) else self.options['criterion']} "
            f"{self.plan or 'ratio=' + str(self.options['ratio'])}"
            + (f" calibration={self.options['calibration']}" if self.options.get("calibration") else ""),
            f"layers found: {self.chains_found} ({self.count('chain')} chains, {self.count('group')} groups), "
            f"pruned: {self.chains_pruned}, left whole: {len(self.skipped)}",
        ]
        if self.canonicalised:
            lines.append("canonicalised first: " + "; ".join(self.canonicalised))
        if self.layers:
            width = max(len(layer.name) for layer in self.layers)
            lines.append(f"  {'layer'.ljust(width)}  kind   channels     MACs   absorbed by")
            for layer in self.layers:
                note = f"  (approximate: {', '.join(layer.approximations)})" if layer.approximations else ""
                if layer.lambdas is not None:
                    note += f"  lambda1={layer.lambdas[0]:g} lambda2={layer.lambdas[1]:g}"
                lines.append(
                    f"  {layer.name.ljust(width)}  {layer.kind:<5} {layer.channels_before:>4} -> {layer.channels_after:<4} "
                    f"{_short(layer.macs):>6}   {layer.next_layer}{note}"
                )
        if self.skipped:
            reasons: dict[str, list[SkippedReport]] = {}
            for skip in self.skipped:
                reasons.setdefault(skip.reason, []).append(skip)
            lines.append("left whole:")
            for reason, skips in sorted(reasons.items(), key=lambda item: -len(item[1])):
                macs = [s.macs for s in skips]
                total = "" if any(m is None for m in macs) else f", {_short(sum(macs))} MACs"
                lines.append(f"  {len(skips)} ({skips[0].name}{' ...' if len(skips) > 1 else ''}{total}): {reason}")
        lines.append(_change("parameters", self.parameters_before, self.parameters_after))
        lines.append(_change("MACs/sample", self.macs_before, self.macs_after))
        if self.validation is not None:
            v = self.validation
            lines.append(
                f"validation: checker ok, shape inference ok, onnxruntime ok on {v.batch} {v.inputs} sample(s)"
                f" ({_batch_shapes(v.shapes)})"
            )
            for out in v.outputs:
                agree = "" if out.top1_agreement is None else f", top-1 agreement {100 * out.top1_agreement:.1f}%"
                lines.append(f"  output {out.name}: relative L2 error {out.relative_l2_error:.4f}{agree}")
        if self.latency is not None:
            lines.append(_latency_line(self.latency, self.macs_before, self.macs_after))
        if self.output:
            lines.append(f"written: {self.output}")
        return "\n".join(lines)

    def inspection(self) -> str:
        """What the analysis found, layer by layer (the `inspect` command): every candidate
        and everything left whole, each with its MACs and their share of the model's."""
        lines = [f"onnx-lbyl {self.tool_version}: inspect {self.input or 'model'} (scope {self.options['scope']})",
                 f"parameters: {_count(self.parameters_before)}; "
                 f"MACs/sample: {_count(self.macs_before)}"
                 + (f" at {_batch_shapes(dict(self.options['input_shapes']))}" if self.options.get("input_shapes") else "")]
        if self.canonicalised:
            lines.append("canonicalised first: " + "; ".join(self.canonicalised))
        chains = sum(1 for c in self.candidates if c.kind == "chain")
        lines.append(f"prunable: {len(self.candidates)} ({chains} chains, {len(self.candidates) - chains} groups)")
        rows = [(c.name, c.kind, str(c.channels), _short(c.macs), self._share(c.macs), c.read_by) for c in self.candidates]
        lines += _table(("layer", "kind", "channels", "MACs", "share", "read by"), rows)
        lines.append(f"left whole: {len(self.skipped)}")
        lines += _table(("layer", "MACs", "share", "reason"),
                        [(s.name, _short(s.macs), self._share(s.macs), s.reason) for s in self.skipped])
        return "\n".join(lines)

    def _share(self, macs: int | None) -> str:
        """`macs` as a share of the model's MACs; '?' when either is unknown."""
        if macs is None or not self.macs_before:
            return "?"
        return f"{100 * macs / self.macs_before:.1f}%"


def _greedy(method: str) -> bool:
    """The method chooses channels by output error, not by the recorded criterion."""
    spec = METHODS.get(method)
    return spec is not None and spec.greedy_selection


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    """Indented, left-aligned columns (the last one unpadded)."""
    if not rows:
        return []
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header) - 1)]
    return ["  " + "  ".join([*(cell.ljust(w) for cell, w in zip(row, widths)), row[-1]]).rstrip()
            for row in (header, *rows)]


def _batch_shapes(shapes: dict) -> str:
    return ", ".join(f"{name}: {'x'.join(str(d) for d in dims)}" for name, dims in shapes.items())


def _short(value: int | None) -> str:
    """1.2M-style MACs for the table; '?' when unknown."""
    if value is None:
        return "?"
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= size:
            return f"{value / size:.1f}{unit}"
    return str(value)


def _change(label: str, before: int | None, after: int | None) -> str:
    if before is None and after is None:
        return f"{label}: unknown"  # graph.cost: a layer's output shape is not known
    share = f" ({100 * (after - before) / before:+.1f}%)" if before and after is not None else ""
    return f"{label}: {_count(before)} -> {_count(after)}{share}"


def _count(value: int | None) -> str:
    return "unknown" if value is None else f"{value:,}"


def _latency_line(latency: LatencyComparison, macs_before: int | None, macs_after: int | None) -> str:
    """Latency before -> after, with its ratio beside the MACs ratio (both after/before)."""
    a, b = latency.original, latency.pruned
    macs = f", MACs x{macs_after / macs_before:.3f}" if macs_before and macs_after is not None else ""
    threads = "default threads" if a.threads == 0 else f"{a.threads} thread(s)"
    return (f"latency (onnxruntime CPU, batch {a.batch}, median of {a.runs} runs after {a.warmup} warm-up, "
            f"{threads}): {a.median_ms:.1f} ms -> {b.median_ms:.1f} ms (x{latency.ratio:.3f}{macs})")
