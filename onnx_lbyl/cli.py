"""The command line: `onnx-lbyl IN.onnx OUT.onnx --ratio R` and its subcommands.

Exit codes scripts can rely on: 0 success; 2 bad input or usage (unreadable model, bad
option, nothing prunable, unwritable output); 1 the result failed validation or an
unexpected error. Every failure prints one line on stderr and leaves no output file.
"""
from __future__ import annotations

import sys
from pathlib import Path

import click

from . import __version__
from .errors import InputError, LbylError
from .graph.io import check_output_path, save_atomic, write_atomic
from .numerics.compensation import DEFAULT_LAMBDAS
from .numerics.selection import CRITERIA, CRITERION_HELP
from .options import METHOD_HELP, METHODS, CompressOptions

EXIT_CODES = "Exit codes: 0 success, 2 bad input or usage, 1 validation failed or internal error."


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


@cli.command("compress", epilog=EXIT_CODES)
@click.argument("input_path", metavar="IN.onnx")
@click.argument("output_path", metavar="OUT.onnx")
@click.option("--ratio", "-r", type=float, default=0.3, show_default=True,
              help="Fraction of output channels removed from every prunable Conv, in [0, 1).")
@click.option("--method", type=click.Choice(METHODS), default="lbyl", show_default=True,
              help="How removed channels are compensated. " + _choices_help(METHOD_HELP) + ".")
@click.option("--criterion", type=click.Choice(list(CRITERIA)), default="l2", show_default=True,
              help="Which channels are removed (lowest first). " + _choices_help(CRITERION_HELP) + ".")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random criterion.")
@click.option("--lambda1", type=float, default=DEFAULT_LAMBDAS.lambda1, show_default=True,
              help="LBYL weight of the bias mismatch relative to the filter mismatch.")
@click.option("--lambda2", type=float, default=DEFAULT_LAMBDAS.lambda2, show_default=True,
              help="LBYL ridge, relative to the mean squared norm of the kept folded filters.")
@click.option("--inputs", "inputs_path", metavar="DATA.npz", default=None,
              help="Validate on these inputs (arrays named like the model's inputs) instead of a random batch.")
@click.option("--report", "report_path", metavar="FILE.json", default=None,
              help="Also write the report as JSON to this file.")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing but errors.")
def compress_command(input_path, output_path, ratio, method, criterion, seed, lambda1, lambda2,
                     inputs_path, report_path, quiet) -> None:
    """Remove the fraction RATIO of output channels of every prunable Conv in IN.onnx,
    restore with LBYL, validate, and write OUT.onnx.

    A prunable chain is Conv -> [BatchNormalization] -> Relu -> Conv whose middle tensors
    nothing else reads; residual-coupled Convs, grouped Convs and shared or input-fed
    weights are left alone and listed in the report. The input file is never modified.
    """
    from .pipeline import compress  # deferred: `--help` stays fast

    options = CompressOptions(ratio=ratio, method=method, criterion=criterion, seed=seed,
                              lambda1=lambda1, lambda2=lambda2).check()
    output = check_output_path(input_path, output_path)
    if report_path is not None:
        check_output_path(input_path, report_path)
    if inputs_path is not None and not Path(inputs_path).is_file():
        raise InputError(f"inputs file not found: {inputs_path}")

    def progress(done: int, total: int, layer) -> None:
        if not quiet:
            click.echo(f"[{done}/{total}] {layer.name}: {layer.channels_before} -> {layer.channels_after}", err=True)

    result = compress(input_path, options, inputs=inputs_path, progress=progress)
    save_atomic(result.model, output)
    result.report.output = str(output)
    if report_path is not None:
        write_atomic(report_path, (result.report.to_json() + "\n").encode())
    if not quiet:
        click.echo(result.report.summary())


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script: one-line errors, exit codes from EXIT_CODES."""
    try:
        code = cli.main(args=argv, prog_name="onnx-lbyl", standalone_mode=False)
    except click.exceptions.UsageError as exc:
        click.echo(f"onnx-lbyl: error: {exc.format_message()}", err=True)
        code = 2
    except click.exceptions.Abort:
        click.echo("onnx-lbyl: aborted", err=True)
        code = 130
    except LbylError as exc:
        click.echo(f"onnx-lbyl: error: {exc}", err=True)
        code = exc.exit_code
    except KeyboardInterrupt:
        click.echo("onnx-lbyl: interrupted", err=True)
        code = 130
    except Exception as exc:  # a bug: still one line, still no output file
        click.echo(f"onnx-lbyl: internal error ({type(exc).__name__}): {exc}", err=True)
        code = 1
    code = code if isinstance(code, int) else 0
    if argv is None:
        sys.exit(code)
    return code


if __name__ == "__main__":
    main()
