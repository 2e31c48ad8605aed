"""The console script `onnx-lbyl`: onnx_lbyl.cli.main, with a Ctrl-C that lands while the
libraries load (onnx, onnxruntime, scipy: a second or more) also ending in one line and
exit code 130 instead of a traceback. Nothing is written before main() runs.

An interrupted run leaves through os._exit(130) once its own cleanup is done: CPython
remembers a KeyboardInterrupt that passed through code a C extension ran with PyRun_*
(pybind11 modules do, while they import) and would otherwise end the process by SIGINT
(exit status -2) even though the interrupt was handled."""
import os
import signal
import sys


def _interrupted(report: bool) -> None:
    if report:
        sys.stderr.write("onnx-lbyl: interrupted\n")
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os._exit(130)


def main() -> None:
    hit = []

    def on_sigint(signum, frame):
        hit.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_sigint)  # until cli.main installs its own (and after it)
    try:
        from .cli import main as cli_main
    except BaseException:
        if hit:  # a Ctrl-C inside a C extension's import may surface as ImportError
            _interrupted(report=True)
        raise
    try:
        cli_main()
    except KeyboardInterrupt:  # in the instant before or after cli.main's own handling
        _interrupted(report=True)
    except SystemExit as exc:
        if exc.code == 130:
            _interrupted(report=False)  # main() printed the line and cleaned up
        raise


if __name__ == "__main__":
    main()
