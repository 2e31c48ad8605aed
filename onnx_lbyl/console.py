"""The console script `onnx-lbyl`: onnx_lbyl.cli.main, with a Ctrl-C that lands while the
libraries load (onnx, onnxruntime, scipy: a second or more) also ending in one line and
exit code 130 instead of a traceback. Nothing is written before main() runs."""
import sys


def main() -> None:
    try:
        from .cli import main as cli_main
    except KeyboardInterrupt:
        sys.stderr.write("onnx-lbyl: interrupted\n")
        sys.exit(130)
    cli_main()


if __name__ == "__main__":
    main()
