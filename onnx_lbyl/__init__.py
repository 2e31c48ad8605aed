"""onnx-lbyl: data-free channel pruning of ONNX CNNs with LBYL restoration.

    from onnx_lbyl import compress, CompressOptions
    result = compress("in.onnx", CompressOptions(ratio=0.3))
    onnx.save(result.model, "out.onnx"); print(result.report.summary())
"""
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
