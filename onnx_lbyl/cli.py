"""The command line: `onnx-lbyl IN.onnx OUT.onnx --ratio R` and its subcommands.

Exit codes scripts can rely on: 0 success; 2 bad input or usage (unreadable model, bad
option, nothing prunable, unwritable output); 1 the result failed validation or an
unexpected error. Every failure prints one line on stderr and leaves no output file.
"""
from __future__ import annotations

import json
import signal
import sys
import threading
import time
import traceback
import warnings
from pathlib import Path

import click

from . import __version__
from .errors import InputError, LbylError
from .graph.io import PendingWrite, write_atomic
from .numerics.compensation import DEFAULT_LAMBDAS
from .numerics.selection import CRITERIA, CRITERION_HELP
from .graph.chains import APPROXIMATION_HELP
from .validate import DRIFT_WARNING
from .methods import DEFAULT_METHOD, METHOD_HELP, METHODS
from .options import CALIBRATION_FITS, DEFAULT_ROUND_TO, SCOPES, ALLOCATIONS, STATISTICS_SOURCES, CompressOptions
from .paths import ModelFile, check_paths, data_file

EXIT_CODES = "Exit codes: 0 success, 2 bad input or usage, 1 validation failed or internal error, 130 interrupted."
VERBOSE_HELP = "Also show third-party warnings and onnxruntime's log, and the traceback of an internal error."
_verbose = [False]  # set by the running command (--verbose), read by main()


class Interrupted(BaseException):
    """Ctrl-C (SIGINT) during main(): a BaseException that click does not turn into Abort, so
    cleanup code runs (`finally`, `except BaseException`) and main() prints one line."""


_interrupted = [False]  # set by _on_sigint: whatever the run then fails with, it was interrupted


def _on_sigint(signum, frame) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the cleanup short
    _interrupted[0] = True
    raise Interrupted()


def _third_party_output(verbose: bool) -> None:
    """Without --verbose, Python warnings (numpy's RuntimeWarnings, onnx's, ...) and onnxruntime's
    log lines stay off stderr: a failure reads as its one line. main() restores both."""
    _verbose[0] = verbose
    if not verbose:
        warnings.simplefilter("ignore")
        import onnxruntime as ort

        ort.set_default_logger_severity(4)  # fatal only


class DefaultCommandGroup(click.Group):
    """A group whose first argument, when it names no subcommand, goes to `compress`, so
    `onnx-lbyl IN OUT --ratio R` works beside `onnx-lbyl SUBCOMMAND ...`."""

    default_command = "compress"

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h", "--version"):
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)


@click.group(
    cls=DefaultCommandGroup,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=EXIT_CODES,
)
@click.version_option(__version__, prog_name="onnx-lbyl")
def cli() -> None:
    """Prune output channels of ONNX CNNs and restore accuracy without data.

    \b
    Main use (the `compress` command is the default):
      onnx-lbyl IN.onnx OUT.onnx --ratio 0.3
    See `onnx-lbyl compress --help` for every option.
    """


def _choices_help(table: dict[str, str]) -> str:
    return "; ".join(f"{k}: {v}" for k, v in table.items())


def _comma_list(choices: tuple[str, ...] | None = None):
    """A click callback for repeatable options that also take comma lists (`--exclude a,b` is
    `--exclude a --exclude b`), checking each item against `choices` when given."""

    def split(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> tuple[str, ...]:
        items = tuple(item.strip() for value in values for item in value.split(",") if item.strip())
        for item in items:
            if choices is not None and item not in choices:
                raise click.BadParameter(f"{item!r} is not one of {', '.join(choices)} "
                                         "(repeat the option or give a comma list)", ctx, param)
        return items

    return split


@cli.command("compress", epilog=EXIT_CODES)
@click.argument("input_path", metavar="IN.onnx")
@click.argument("output_path", metavar="OUT.onnx")
@click.option("--ratio", "-r", type=float, default=0.3, show_default=True,
              help="Fraction of the channels removed from every prunable group (kept counts rounded up to --round-to), in [0, 1).")
@click.option("--method", type=click.Choice(tuple(METHODS)), default=DEFAULT_METHOD, show_default=True,
              help="How removed channels are compensated. " + _choices_help(METHOD_HELP) + ".")
@click.option("--criterion", type=click.Choice(list(CRITERIA)), default="l2", show_default=True,
              help="Which channels are removed (lowest first). " + _choices_help(CRITERION_HELP) + ".")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random criterion and of the data-free probe's synthetic images.")
@click.option("--lambda1", type=float, default=DEFAULT_LAMBDAS.lambda1, show_default=True,
              help="LBYL weight of the bias mismatch relative to the filter mismatch.")
@click.option("--lambda2", type=float, default=DEFAULT_LAMBDAS.lambda2, show_default=True,
              help="LBYL ridge, relative to the mean squared norm of the kept folded filters.")
@click.option("--calibration", "calibration_path", metavar="DATA.npz", default=None,
              help="Optional unlabeled inputs (uint8 `images` get the model's preprocessing, or arrays named "
                   "like the model's inputs) on which the statistical methods measure the activations "
                   "instead of using BN statistics or synthetic input. A few hundred images suffice.")
@click.option("--statistics", type=click.Choice(STATISTICS_SOURCES), default="probe", show_default=True,
              help="Where the statistical methods get pre-activation statistics without --calibration: "
                   "probe (the model run on synthetic images, every BN normalising by the batch's own "
                   "statistics), batchnorm (the BN node's gamma/beta, correlations from the filters), "
                   "auto (batchnorm where the chain has a BN node, else the probe).")
@click.option("--calibration-fit", type=click.Choice(CALIBRATION_FITS), default="activations", show_default=True,
              help="With --calibration: activations (least squares on the measured activations) or "
                   "gaussian (only their mean and covariance, in the Gaussian model).")
@click.option("--scope", type=click.Choice(SCOPES), default="groups", show_default=True,
              help="groups: every channel group the analysis proves safe (residual streams, depthwise "
                   "blocks, squeeze-excitation, Concat/Split, any activation); chains: only "
                   "Conv -> [BN] -> Relu -> Conv chains whose middle nothing else reads (the papers' protocol).")
@click.option("--layer-ratio", "layer_ratio", metavar="PATTERN=R", multiple=True, callback=_comma_list(),
              help="Ratio R for the layers whose name matches the shell-style PATTERN (repeatable or a comma "
                   "list; the last match wins).")
@click.option("--exclude", metavar="PATTERN", multiple=True, callback=_comma_list(),
              help="Never prune the layers whose name matches PATTERN (repeatable or a comma list).")
@click.option("--target-macs", type=float, default=None, metavar="F",
              help="Remove this fraction of the model's MACs instead of a fixed --ratio, shared out across layers as "
                   "--allocation says.")
@click.option("--allocation", type=click.Choice(ALLOCATIONS), default="sensitivity", show_default=True,
              help="How --target-macs is shared out: error (with moments-greedy: channels go where the "
                   "expected output error per MAC saved is lowest), sensitivity (as error, each layer's "
                   "prices scaled by the output drift measured with it alone pruned to half: one model run "
                   "per layer) or uniform (one ratio for every layer).")
@click.option("--allow-approximate", metavar="STEP[,STEP]", multiple=True,
              callback=_comma_list(tuple(sorted(APPROXIMATION_HELP))),
              help="Also prune through steps where the compensation is approximate: "
                   + _choices_help(APPROXIMATION_HELP) + " (repeatable or a comma list; reported as approximate).")
@click.option("--round-to", type=int, default=DEFAULT_ROUND_TO, show_default=True, metavar="N",
              help="Round kept channel counts up to a multiple of N (never above the layer's width), so the "
                   "pruned Convs run on onnxruntime's fast CPU kernels; 1 keeps the exact floor(n (1 - ratio)).")
@click.option("--input-shape", "input_shape", metavar="NAME:D0,D1,...", multiple=True,
              help="Shape of an input with dynamic dimensions, e.g. x:1,3,224,224 (repeatable): the probe, "
                   "validation and MACs run at it. A dynamic batch stays dynamic. Without it such an input "
                   "takes the shape of the --calibration data, else the run is refused.")
@click.option("--inputs", "inputs_path", metavar="DATA.npz", default=None,
              help="Validate on these inputs (arrays named like the model's inputs). Without it validation "
                   "runs on the first --calibration samples, else on synthetic natural-looking images "
                   "(random values for non-image inputs), at the declared or --input-shape shape.")
@click.option("--max-drift", type=float, default=None, metavar="X",
              help="Fail (exit 1, nothing written) when an output's relative L2 drift on the validation "
                   f"batch exceeds X. Without it a drift above {DRIFT_WARNING:g} prints a warning.")
@click.option("--report", "report_path", metavar="FILE.json", default=None,
              help="Also write the report as JSON to this file.")
@click.option("--benchmark", is_flag=True,
              help="Also time the original and the pruned model in onnxruntime (CPU) on the validation "
                   "batch and report both latencies, their ratio and the MACs ratio (adds the `latency` "
                   "section to the report).")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing but errors.")
@click.option("--verbose", is_flag=True, help=VERBOSE_HELP)
def compress_command(input_path, output_path, ratio, method, criterion, seed, lambda1, lambda2,
                     inputs_path, report_path, quiet, benchmark, calibration_path=None, layer_ratio=(),
                     exclude=(), target_macs=None, allow_approximate=(), round_to=DEFAULT_ROUND_TO, statistics="probe",
                     calibration_fit="activations", scope="groups", input_shape=(), allocation="sensitivity",
                     max_drift=None, verbose=False) -> None:
    """Remove the fraction RATIO of output channels of every prunable layer in IN.onnx,
    move what they carried into the next layer, validate, and write OUT.onnx.

    What is pruned (the default --scope groups) is every channel group the analysis proves
    safe: the channels a set of producers (Conv, ConvTranspose, Gemm, MatMul) share with the
    layers that read them, through any elementwise activation, BN, depthwise Convs, residual
    Adds, squeeze-excitation gates, Concat/Split, pooling and layout ops. Anything it cannot
    prove safe (shared or input-fed weights, an unknown operator on the path) is left whole
    and listed with its reason (`onnx-lbyl inspect` lists them without pruning). The input
    file is never modified; OUT.onnx is written only after it validated.
    """
    _third_party_output(verbose)
    from .pipeline import compress  # deferred: `--help` stays fast

    from .graph.input_shapes import parse_input_shape
    from .planning import parse_layer_ratio

    options = CompressOptions(ratio=ratio, method=method, criterion=criterion, seed=seed,
                              lambda1=lambda1, lambda2=lambda2, calibration=calibration_path,
                              layer_ratios=tuple(parse_layer_ratio(text) for text in layer_ratio),
                              exclude=tuple(exclude), target_macs=target_macs,
                              allow_approximate=tuple(allow_approximate), round_to=round_to,
                              statistics=statistics, calibration_fit=calibration_fit,
                              scope=scope, allocation=allocation, max_drift=max_drift,
                              input_shapes=tuple(parse_input_shape(text) for text in input_shape)).check()
    check_paths(reads={"input": ModelFile(input_path), "calibration": calibration_path, "inputs": inputs_path},
                writes={"output": ModelFile(output_path), "--report": report_path})
    output = Path(output_path)
    if inputs_path is not None and not Path(inputs_path).is_file():
        raise InputError(f"inputs file not found: {inputs_path}")

    first: list[float] = []  # when the first layer was done: the rate is measured from there

    def progress(done: int, total: int, layer) -> None:
        if quiet:
            return
        now = time.monotonic()
        first[:] = first or [now]
        elapsed = now - first[0]
        eta = (f", about {_duration(elapsed * (total - done) / (done - 1))} left"
               if done > 1 and done < total and elapsed >= 2 else "")
        click.echo(f"[{done}/{total}] {layer.name}: {layer.channels_before} -> {layer.channels_after}{eta}", err=True)

    try:
        result = compress(input_path, options, inputs=inputs_path, progress=progress, output=output,
                          # on a terminal only: in a log, a refusal found while planning stays one line
                          stage=None if quiet or not sys.stderr.isatty() else lambda text: click.echo(f"[{text}]", err=True))
    except LbylError as exc:
        _write_refusal(report_path, exc)
        raise
    report = None
    try:
        if benchmark:  # before saving: a failure still leaves no output file
            from .latency import compare_latency

            pruned = result.model if result.staged is None else result.staged.path  # large: from its file
            result.report.latency = compare_latency(input_path, pruned, result.feeds)
        result.report.output = str(output)
        if report_path is not None:  # written before the model is moved into place: a failure leaves neither
            report = PendingWrite(report_path, (result.report.to_json() + "\n").encode())
        result.save(output)
        if report is not None:
            try:
                report.commit()
            except InputError:
                _remove_written(output, large=result.staged is not None)
                raise
    finally:
        result.discard()
        if report is not None:
            report.discard()
    if not quiet:
        click.echo(result.report.summary())
        for warning in result.report.warnings:
            click.echo(f"onnx-lbyl: warning: {warning}", err=True)


def _write_refusal(report_path: str | None, exc: LbylError) -> None:
    """A refused or failed run still writes its --report (what was found, why nothing or not
    enough could be done); a report that cannot be written leaves the original error to say."""
    report = getattr(exc, "report", None)
    if report_path is None or report is None:
        return
    try:
        write_atomic(report_path, (report.to_json() + "\n").encode())
    except (LbylError, OSError):
        pass


def _duration(seconds: float) -> str:
    return f"{seconds:.0f}s" if seconds < 90 else f"{seconds / 60:.0f} min"


@cli.command("inspect", epilog=EXIT_CODES)
@click.argument("model_path", metavar="MODEL.onnx")
@click.option("--scope", type=click.Choice(SCOPES), default="groups", show_default=True,
              help="What to look for, as compress --scope.")
@click.option("--allow-approximate", metavar="STEP[,STEP]", multiple=True,
              callback=_comma_list(tuple(sorted(APPROXIMATION_HELP))),
              help="As compress --allow-approximate (repeatable or a comma list).")
@click.option("--input-shape", "input_shape", metavar="NAME:D0,D1,...", multiple=True,
              help="As compress --input-shape: the shape dynamic inputs are costed at (repeatable).")
@click.option("--json", "json_path", metavar="FILE.json", default=None,
              help="Also write the findings as JSON (the same fields as compress --report).")
@click.option("--verbose", is_flag=True, help=VERBOSE_HELP)
def inspect_command(model_path, scope, allow_approximate, input_shape, json_path, verbose=False) -> None:
    """List what compress would find in MODEL.onnx, without pruning or writing a model: every
    chain and channel group it can prune, everything it leaves whole and why, with the MACs
    of the layers each one narrows and their share of the model's."""
    from .graph.input_shapes import parse_input_shape
    from .pipeline import inspect

    _third_party_output(verbose)
    check_paths(reads={"model": ModelFile(model_path)}, writes={"--json": json_path})
    options = CompressOptions(scope=scope, allow_approximate=tuple(allow_approximate),
                              input_shapes=tuple(parse_input_shape(text) for text in input_shape))
    report = inspect(model_path, options)
    click.echo(report.inspection())
    if json_path is not None:
        write_atomic(json_path, (report.to_json() + "\n").encode())


@cli.command("eval", epilog=EXIT_CODES)
@click.argument("model_path", metavar="MODEL.onnx")
@click.argument("data_path", metavar="DATA")
@click.option("--compare", "compare_path", metavar="ORIGINAL.onnx", default=None,
              help="Also score this model on the same inputs and report its top-1 and the prediction agreement.")
@click.option("--mean", default=None, metavar="M[,M...]",
              help="Per-channel mean on values scaled to [0, 1] (default: model metadata, else 0).")
@click.option("--std", default=None, metavar="S[,S...]",
              help="Per-channel std on values scaled to [0, 1] (default: model metadata, else 1).")
@click.option("--scale", default=None, metavar="X",
              help="Multiplies the raw values first, e.g. 1/255 (default: model metadata for integer "
                   "images, else 1/255 for integer and 1 for float images).")
@click.option("--batch-size", "-b", type=int, default=256, show_default=True,
              help="Images per onnxruntime call (a model with a fixed batch axis uses its own).")
@click.option("--json", "json_path", metavar="FILE.json", default=None,
              help="Also write the result as JSON to this file.")
@click.option("--quiet", "-q", is_flag=True, help="Print only the results: no header, no progress.")
@click.option("--verbose", is_flag=True, help=VERBOSE_HELP)
def eval_command(model_path, data_path, compare_path, mean, std, scale, batch_size, json_path, quiet,
                 verbose=False) -> None:
    """Top-1 (and top-5) accuracy of MODEL.onnx on DATA.

    \b
    DATA is an .npz with `images` (N,C,H,W; uint8 or float) and `labels`
    (N integers), or a folder DATA/<class>/*.png|jpg whose class folders,
    sorted by name, give the label indices (needs Pillow: the `images` extra).
    Images must already have the model's size; nothing is resized.
    Preprocessing is (x * scale - mean) / std per channel, read by default from
    the model's `lbyl_eval.preprocess` metadata, which compress keeps in its output.
    """
    _third_party_output(verbose)
    from .evaluate import Preprocess, evaluate, format_result, parse_floats, parse_scale  # deferred: `--help` stays fast

    check_paths(reads={"model": ModelFile(model_path), "data": data_path,
                       "compared model": None if compare_path is None else ModelFile(compare_path)},
                writes={"--json": json_path})
    options = {
        "mean": parse_floats(mean, "--mean") if mean is not None else None,
        "std": parse_floats(std, "--std") if std is not None else None,
        "scale": parse_scale(scale, "--scale") if scale is not None else None,
    }
    if compare_path is not None and not Path(compare_path).is_file():
        raise InputError(f"compared model not found: {compare_path}")
    last = [time.monotonic()]

    def progress(done: int, total: int) -> None:
        # a line every few seconds, only for runs that take that long: readable in logs too
        now = time.monotonic()
        if not quiet and done < total and now - last[0] >= 3.0:
            last[0] = now
            click.echo(f"[eval] {done}/{total} images", err=True)

    result = evaluate(model_path, data_path, compare=compare_path, batch_size=batch_size,
                      progress=progress, **options)
    if not quiet:
        click.echo(f"model: {model_path}")
        if compare_path is not None:
            click.echo(f"compared with: {compare_path}")
        click.echo(f"data: {data_path}")
        click.echo("preprocessing: " + Preprocess(**result.preprocess).describe())
    click.echo(format_result(result))
    for warning in result.warnings if not quiet else []:
        click.echo(f"onnx-lbyl: warning: {warning}", err=True)
    if json_path is not None:
        record = {"model": str(model_path), "data": str(data_path),
                  "compared_with": None if compare_path is None else str(compare_path), **result.to_dict()}
        write_atomic(json_path, (json.dumps(record, indent=2) + "\n").encode())


def _remove_written(output: Path, large: bool) -> None:
    """Take back a model this run has just moved into place (and its data file)."""
    for path in (output, data_file(output)) if large else (output,):
        try:
            path.unlink()
        except OSError:
            pass


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script: one-line errors, exit codes from EXIT_CODES."""
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, _on_sigint) if in_main_thread else None
    unraisable = sys.unraisablehook
    # an exception in a destructor (a Ctrl-C that lands in one) prints a traceback of its own
    sys.unraisablehook = lambda info: unraisable(info) if _verbose[0] else None
    _verbose[0] = _interrupted[0] = False
    try:
        with warnings.catch_warnings():
            code = _run(argv)
    finally:
        if in_main_thread and previous is not None:
            signal.signal(signal.SIGINT, previous)
        sys.unraisablehook = unraisable
        if not _verbose[0] and "onnxruntime" in sys.modules:
            sys.modules["onnxruntime"].set_default_logger_severity(2)  # its default, for a caller in-process
    if argv is None:
        sys.exit(code)
    return code


def _one_line(text: str) -> str:
    return "; ".join(line.strip() for line in str(text).splitlines() if line.strip())


def _run(argv: list[str] | None) -> int:
    try:
        code = cli.main(args=argv, prog_name="onnx-lbyl", standalone_mode=False)
    except click.exceptions.UsageError as exc:
        click.echo(f"onnx-lbyl: error: {_one_line(exc.format_message())}", err=True)
        code = 2
    except (click.exceptions.Abort, KeyboardInterrupt, Interrupted):
        click.echo("onnx-lbyl: interrupted", err=True)
        code = 130
    except Exception as exc:
        code = _failed(exc)
    return code if isinstance(code, int) else 0


def _failed(exc: Exception) -> int:
    """The one line and exit code of a failed run. A Ctrl-C that landed inside a C extension
    (its import, say) can surface as another exception, e.g. ImportError: still an interrupt."""
    if _interrupted[0]:
        click.echo("onnx-lbyl: interrupted", err=True)
        return 130
    if isinstance(exc, LbylError):
        click.echo(f"onnx-lbyl: error: {_one_line(exc) or type(exc).__name__}", err=True)
        return exc.exit_code
    if _verbose[0]:  # a bug: still one line, still no output file
        traceback.print_exception(type(exc), exc, exc.__traceback__)
    click.echo(f"onnx-lbyl: internal error ({type(exc).__name__}): {_one_line(exc)}", err=True)
    return 1


if __name__ == "__main__":
    main()
