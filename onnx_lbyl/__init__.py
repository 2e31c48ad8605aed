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
from .options import CompressOptions  # noqa: E402
from .pipeline import CompressionResult, compress  # noqa: E402
from .report import CompressionReport  # noqa: E402

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
