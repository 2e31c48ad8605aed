"""onnx-lbyl: data-free channel pruning of ONNX CNNs with LBYL restoration.

    from onnx_lbyl import compress, CompressOptions
    result = compress("in.onnx", CompressOptions(ratio=0.3))
    onnx.save(result.model, "out.onnx"); print(result.report.summary())
"""
import os as _os

# The solvers factor many small matrices (one per layer, at most a few thousand wide), where a
# multi-threaded BLAS spends more time synchronising than computing: measured on ResNet-50,
# 13.4 s with the default threads against 4.1 s with one. A value the user set is kept.
for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    _os.environ.setdefault(_variable, "1")

__version__ = "0.1.0"

from .errors import InputError, LbylError, NothingToPruneError, ValidationError  # noqa: E402

# The rest is imported on first use (PEP 562), so that the console script (onnx_lbyl.console)
# starts with nothing loaded and can turn a Ctrl-C during the slow imports into one line.
_LAZY = {"CompressOptions": "options", "CompressionResult": "pipeline", "compress": "pipeline",
         "CompressionReport": "report"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "__version__",
    "compress",
    "CompressOptions",
    "CompressionResult",
    "CompressionReport",
    "LbylError",
    "InputError",
    "NothingToPruneError",
    "ValidationError",
]
