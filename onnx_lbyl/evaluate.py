"""Top-1/top-5 accuracy of an ONNX classifier on a labelled data set, without torch.

Pruning without data is only worth something if a user can see what it cost, so the tool
ships its own scorer: the same numpy/onnxruntime stack as the rest of the package, no
data-loading framework. Data is either an .npz (`images` NCHW, `labels`) or a folder of
images in class sub-folders. Images are never resized: the scores would then measure the
resize as much as the model, so a size mismatch is an error.

Preprocessing is `(x * scale - mean[c]) / std[c]`. Its defaults come from the model's
metadata key `lbyl_eval.preprocess`, which `compress` copies into every model it writes,
so a pruned model is scored exactly as its original was.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import onnx
import onnxruntime as ort

from .arrays import read_npz
from .errors import InputError, first_line
from .graph.io import load_model
from .validate import model_inputs

PREPROCESS_KEY = "lbyl_eval.preprocess"
DEFAULT_BATCH_SIZE = 256
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")

Progress = Callable[[int, int], None]


# ---------------------------------------------------------------------------------------
# Data


@dataclass
class Dataset:
    """Labelled images as one array: NCHW `images` (any numeric dtype), int64 `labels`."""

    images: np.ndarray
    labels: np.ndarray
    source: str
    classes: list[str] | None = None  # class names, when the data names them

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def load_dataset(path: str | os.PathLike, channels: int | None = None) -> Dataset:
    """Read an .npz or an image folder, or raise InputError saying what is wrong.

    `channels` (the model's C, when fixed) decides whether folder images are read as
    greyscale or RGB; it does not matter for .npz data.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"data not found: {p}")
    if p.is_dir():
        return _load_folder(p, channels)
    return _load_npz(p)


def _load_npz(path: Path) -> Dataset:
    arrays = read_npz(path, "DATA")
    missing = [k for k in ("images", "labels") if k not in arrays]
    if missing:
        raise InputError(f"{path} must hold arrays 'images' (NCHW) and 'labels'; found {', '.join(arrays)}")
    images, labels = arrays["images"], arrays["labels"]
    classes = [str(c) for c in arrays["classes"].tolist()] if "classes" in arrays else None
    if not isinstance(classes, list) or (classes and not all(isinstance(c, str) for c in classes)):
        classes = None
    return _checked(Dataset(images, labels, str(path), classes))


def _load_folder(root: Path, channels: int | None) -> Dataset:
    """DATA/<class>/*.png|jpg: class folders sorted by name give the label indices, as
    torchvision's ImageFolder does, so labels match a model trained with it. Hidden
    folders (.ipynb_checkpoints and the like) and other files are ignored."""
    try:
        from PIL import Image
    except ImportError:
        raise InputError("reading an image folder needs Pillow: pip install 'onnx-lbyl[images]' (or pass an .npz)")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise InputError(f"{root} has no class sub-folders; expected {root}/<class>/*.png|jpg")
    mode = {1: "L", 3: "RGB"}.get(channels or 0)
    images: list[np.ndarray] = []
    labels: list[int] = []
    first: Path | None = None
    for index, name in enumerate(classes):
        files = sorted(f for f in (root / name).iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        for file in files:
            try:
                with Image.open(file) as img:
                    img = img.convert(mode or ("L" if img.mode in ("1", "L", "I;16", "I", "F") else "RGB"))
                    array = np.asarray(img, dtype=np.uint8)
            except Exception as exc:
                raise InputError(f"cannot read image {file}: {first_line(exc)}")
            array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)  # HW(C) -> CHW
            if first is None:
                first = file
            elif array.shape != images[0].shape:
                raise InputError(f"{file} is {_chw(array.shape)} but {first} is {_chw(images[0].shape)}; "
                                 "eval does not resize, all images must have the model's size")
            images.append(array)
            labels.append(index)
    if not images:
        raise InputError(f"no .png/.jpg images in the class folders of {root}")
    return _checked(Dataset(np.stack(images), np.asarray(labels, dtype=np.int64), str(root), classes))


def _chw(shape: Sequence[int]) -> str:
    return "x".join(str(d) for d in shape)


def _checked(data: Dataset) -> Dataset:
    """Shapes, dtypes and counts a scorer can rely on; 3-D images gain a channel axis."""
    images, labels = data.images, data.labels
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise InputError(f"labels in {data.source} must be a 1-D integer array, got {labels.dtype} {labels.shape}")
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4 or not (np.issubdtype(images.dtype, np.integer) or np.issubdtype(images.dtype, np.floating)):
        raise InputError(f"images in {data.source} must be a numeric NCHW array, got {images.dtype} {images.shape}")
    if images.shape[0] != labels.shape[0]:
        raise InputError(f"{data.source} has {images.shape[0]} images but {labels.shape[0]} labels")
    if labels.shape[0] == 0:
        raise InputError(f"{data.source} holds no images")
    if labels.min() < 0:
        raise InputError(f"labels in {data.source} must be >= 0, found {int(labels.min())}")
    if int(labels.max()) > np.iinfo(np.int64).max:  # uint64: would wrap to a negative int64
        raise InputError(f"label {int(labels.max())} in {data.source} is out of range for any model")
    if np.issubdtype(images.dtype, np.floating) and not np.all(np.isfinite(images)):
        raise InputError(f"images in {data.source} contain NaN or infinite values")
    data.images, data.labels = images, labels.astype(np.int64, copy=False)
    return data


# ---------------------------------------------------------------------------------------
# Preprocessing


@dataclass(frozen=True)
class Preprocess:
    """x -> (x * scale - mean[c]) / std[c], per channel (a single value applies to all)."""

    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    scale: float = 1.0
    source: str = "defaults"

    def apply(self, images: np.ndarray, dtype: type = np.float32) -> np.ndarray:
        inverse = 1.0 / self.scale
        if abs(inverse - round(inverse)) < 1e-6:  # x / 255 exactly as torchvision's ToTensor computes it
            x = images.astype(np.float32) / np.float32(round(inverse))
        else:
            x = images.astype(np.float32) * np.float32(self.scale)
        channels = x.shape[1]
        for name, values in (("mean", self.mean), ("std", self.std)):
            if len(values) not in (1, channels):
                raise InputError(f"{name} has {len(values)} values but the images have {channels} channel(s)")
        shape = (1, -1) + (1,) * (x.ndim - 2)
        mean = np.asarray(self.mean, dtype=np.float32).reshape(shape)
        std = np.asarray(self.std, dtype=np.float32).reshape(shape)
        return ((x - mean) / std).astype(dtype, copy=False)

    def describe(self) -> str:
        def values(v: tuple[float, ...]) -> str:
            return ",".join(f"{x:g}" for x in v)

        return (f"(x * {_format_scale(self.scale)} - mean) / std, mean {values(self.mean)}, "
                f"std {values(self.std)} ({self.source})")

    def to_dict(self) -> dict:
        return {"mean": list(self.mean), "std": list(self.std), "scale": self.scale, "source": self.source}


def parse_floats(text: str, name: str) -> tuple[float, ...]:
    """'0.485,0.456,0.406' -> floats, or InputError naming the option."""
    try:
        values = tuple(float(Fraction(v.strip())) for v in str(text).split(",") if v.strip())
    except (ValueError, ZeroDivisionError):
        raise InputError(f"{name} must be comma-separated numbers, got {text!r}")
    if not values or not all(math.isfinite(v) for v in values):
        raise InputError(f"{name} must be comma-separated finite numbers, got {text!r}")
    return values


def parse_scale(text: str | float, name: str = "scale") -> float:
    """A positive number, also written as a fraction such as '1/255'."""
    try:
        value = float(Fraction(str(text).strip())) if not isinstance(text, (int, float)) else float(text)
    except (ValueError, ZeroDivisionError):
        raise InputError(f"{name} must be a number such as 0.5 or 1/255, got {text!r}")
    if not math.isfinite(value) or value <= 0:
        raise InputError(f"{name} must be a positive number, got {text!r}")
    return value


def _format_scale(scale: float) -> str:
    inverse = 1.0 / scale
    if abs(inverse - round(inverse)) < 1e-9 and round(inverse) != 1:
        return f"1/{round(inverse)}"
    return f"{scale:g}"


def metadata_preprocess(model: onnx.ModelProto) -> dict | None:
    """The model's `lbyl_eval.preprocess` metadata as a dict, None when absent."""
    text = _preprocess_text(model)
    if text is None:
        return None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise InputError(f"model metadata {PREPROCESS_KEY} is not valid JSON ({first_line(exc)}); "
                         "pass --mean, --std and --scale")
    if not isinstance(data, dict):
        raise InputError(f"model metadata {PREPROCESS_KEY} must be a JSON object")
    return data


def resolve_preprocess(
    model: onnx.ModelProto,
    integer_images: bool,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    scale: float | None = None,
) -> Preprocess:
    """Given options first, then the model's metadata, then mean 0 and std 1.

    The scale defaults to 1/255 for integer images and 1 for float images, which are
    taken as already scaled to [0, 1]. The metadata's scale describes raw pixels, so it is
    used for integer images only; `scale` given here always applies.
    """
    meta = {} if (mean is not None and std is not None and scale is not None) else (metadata_preprocess(model) or {})
    used_meta, used_options = False, False
    values: dict[str, object] = {}
    for name, given in (("mean", mean), ("std", std)):
        if given is not None:
            values[name], used_options = tuple(float(v) for v in given), True
        elif name in meta:
            raw = meta[name]
            raw = raw if isinstance(raw, list) else [raw]
            try:
                values[name] = tuple(float(v) for v in raw)
            except (TypeError, ValueError):
                raise InputError(f"model metadata {PREPROCESS_KEY} has an unusable {name}: {meta[name]!r}")
            used_meta = True
        else:
            values[name] = (0.0,) if name == "mean" else (1.0,)
    if scale is not None:
        values["scale"], used_options = float(scale), True
    elif integer_images and "scale" in meta:
        values["scale"], used_meta = parse_scale(meta["scale"], f"model metadata {PREPROCESS_KEY} scale"), True
    else:
        values["scale"] = 1 / 255 if integer_images else 1.0
    if not all(math.isfinite(v) for v in values["mean"]):  # type: ignore[union-attr]
        raise InputError("mean values must be finite")
    if not all(math.isfinite(v) and v != 0 for v in values["std"]):  # type: ignore[union-attr]
        raise InputError("std values must be finite and non-zero")
    source = {(True, True): "model metadata and options", (True, False): "model metadata",
              (False, True): "options", (False, False): "defaults"}[(used_meta, used_options)]
    return Preprocess(values["mean"], values["std"], values["scale"], source)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------
# Scoring


class Scorer:
    """One onnxruntime session fed batches of preprocessed images; a fixed batch axis is
    honoured by splitting and zero-padding, so any batch size works with any model."""

    def __init__(self, model: onnx.ModelProto, label: str, threads: int | None = None):
        inputs = model_inputs(model)
        if len(inputs) != 1:
            raise InputError(f"{label} has {len(inputs)} inputs; eval scores single-input classifiers")
        info = inputs[0]
        tt = info.type.tensor_type
        self.label = label
        self.input_name = info.name
        try:
            self.dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)
        except (KeyError, ValueError):
            self.dtype = None
        if self.dtype is None or not np.issubdtype(self.dtype, np.floating):
            raise InputError(f"{label} input {info.name!r} is not a float tensor; eval feeds float images")
        self.dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tt.shape.dim]
        self.fixed_batch = self.dims[0] if self.dims else None
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:  # e.g. 1 per process when several processes share the cores
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(model.SerializeToString(), options,
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise InputError(f"onnxruntime cannot load {label}: {first_line(exc)}")

    @property
    def channels(self) -> int | None:
        return self.dims[1] if len(self.dims) == 4 else None

    def check_fits(self, sample_shape: tuple[int, ...], source: str) -> None:
        """Raise InputError unless one sample (C, H, W) matches the declared input shape."""
        want = self.dims[1:]
        if len(want) == len(sample_shape) and all(w is None or w == s for w, s in zip(want, sample_shape)):
            return
        wanted = "x".join("?" if w is None else str(w) for w in want)
        hint = ""
        if len(sample_shape) == 3 and len(want) == 3 and all(
            w is None or w == s for w, s in zip(want, (sample_shape[2], sample_shape[0], sample_shape[1]))
        ):
            hint = "; the images look like NHWC, store them as NCHW"
        raise InputError(f"images in {source} are {_chw(sample_shape)} per sample but {self.label} takes "
                         f"{wanted} (eval does not resize){hint}")

    def scores(self, batch: np.ndarray) -> np.ndarray:
        """Class scores [n, classes] for a preprocessed batch of any size n."""
        step = self.fixed_batch or len(batch)
        outputs = []
        for start in range(0, len(batch), step):
            chunk = batch[start:start + step]
            real = len(chunk)
            if real < step:
                chunk = np.concatenate([chunk, np.zeros((step - real,) + chunk.shape[1:], chunk.dtype)])
            try:
                out = self.session.run(None, {self.input_name: chunk.astype(self.dtype, copy=False)})[0]
            except Exception as exc:
                raise InputError(f"{self.label} does not run on these images: {first_line(exc)}")
            out = np.asarray(out)
            if out.ndim > 2 and all(d == 1 for d in out.shape[2:]):
                out = out.reshape(out.shape[0], -1)
            if out.ndim != 2 or out.shape[0] != step:
                raise InputError(f"{self.label}'s first output has shape {out.shape}; eval expects [batch, classes]")
            outputs.append(out[:real])
        return np.concatenate(outputs)


@dataclass
class EvalResult:
    """Accuracies in [0, 1]. top5 is None below 5 classes; the comparison fields are None
    unless a second model was scored on the same inputs."""

    top1: float
    top5: float | None
    count: int
    classes: int
    correct: int
    preprocess: dict
    seconds: float = 0.0
    original_top1: float | None = None
    agreement: float | None = None
    warnings: list[str] = field(default_factory=list)
    predictions: np.ndarray | None = field(default=None, repr=False)  # top-1 class per image

    def to_dict(self) -> dict:
        data = asdict(self)
        data.pop("predictions")
        return data


def evaluate(
    model: onnx.ModelProto | str | os.PathLike,
    data: Dataset | str | os.PathLike,
    *,
    compare: onnx.ModelProto | str | os.PathLike | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    scale: float | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    threads: int | None = None,
    progress: Progress | None = None,
) -> EvalResult:
    """Score `model` on `data` (a Dataset, an .npz or an image folder).

    With `compare`, the second model (typically the unpruned original) sees exactly the
    same preprocessed batches, and the result also holds its top-1 and the share of
    images on which both models predict the same class. `threads` caps onnxruntime's
    threads (default: its own choice, all cores). Raises InputError for unusable data,
    options or models.
    """
    started = time.perf_counter()
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch size must be a positive integer, got {batch_size!r}")
    model = _as_model(model)
    scorer = Scorer(model, "the model", threads)
    warnings = []
    other = None
    if compare is not None:
        compare = _as_model(compare)
        other = Scorer(compare, "the compared model", threads)
        if _preprocess_text(compare) != _preprocess_text(model):
            warnings.append(f"the compared model's {PREPROCESS_KEY} metadata differs from the model's; "
                            "both models get the model's preprocessing")
    if not isinstance(data, Dataset):
        data = load_dataset(data, scorer.channels)
    for s in (scorer, other):
        if s is not None:
            s.check_fits(data.images.shape[1:], data.source)
    prep = resolve_preprocess(model, np.issubdtype(data.images.dtype, np.integer), mean, std, scale)

    labels, n = data.labels, len(data)
    step = scorer.fixed_batch or batch_size
    predictions = np.empty(n, dtype=np.int64)
    reference = np.empty(n, dtype=np.int64) if other is not None else None
    classes, top5_hits = 0, 0
    for start in range(0, n, step):
        stop = min(start + step, n)
        batch = prep.apply(data.images[start:stop])
        scores = scorer.scores(batch)
        if start == 0:
            classes = scores.shape[1]
            if int(labels.max()) >= classes:
                raise InputError(f"label {int(labels.max())} in {data.source} is out of range "
                                 f"for a model with {classes} outputs")
        predictions[start:stop] = np.argmax(scores, axis=1)
        if classes >= 5:
            top = np.argpartition(-scores, 4, axis=1)[:, :5]
            top5_hits += int(np.sum(np.any(top == labels[start:stop, None], axis=1)))
        if other is not None:
            ref = other.scores(batch)
            if ref.shape[1] != classes:
                raise InputError(f"the compared model has {ref.shape[1]} outputs, the model {classes}")
            reference[start:stop] = np.argmax(ref, axis=1)
        if progress is not None:
            progress(stop, n)

    correct = int(np.sum(predictions == labels))
    result = EvalResult(
        top1=correct / n,
        top5=top5_hits / n if classes >= 5 else None,
        count=n,
        classes=classes,
        correct=correct,
        preprocess=prep.to_dict(),
        warnings=warnings,
        predictions=predictions,
    )
    if reference is not None:
        result.original_top1 = float(np.mean(reference == labels))
        result.agreement = float(np.mean(reference == predictions))
    result.seconds = round(time.perf_counter() - started, 3)
    return result


def _preprocess_text(model: onnx.ModelProto) -> str | None:
    return {p.key: p.value for p in model.metadata_props}.get(PREPROCESS_KEY)


def _as_model(model: onnx.ModelProto | str | os.PathLike) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        return model
    return load_model(model)


def format_result(result: EvalResult) -> str:
    """The lines `onnx-lbyl eval` prints: accuracies in percent with their counts."""
    lines = [f"top-1: {100 * result.top1:.2f}% ({result.correct}/{result.count})"]
    if result.top5 is not None:
        lines.append(f"top-5: {100 * result.top5:.2f}%")
    lines.append(f"count: {result.count} images, {result.classes} classes")
    if result.original_top1 is not None:
        lines.append(f"original top-1: {100 * result.original_top1:.2f}%")
    if result.agreement is not None:
        same = int(round(result.agreement * result.count))
        lines.append(f"agreement: {100 * result.agreement:.2f}% ({same}/{result.count} same top-1 prediction)")
    return "\n".join(lines)
