"""Mushroom photo -> species probabilities -> safety verdict.

`Classifier.load(model_dir)` reads a model directory (save_pretrained of a
Dinov2ForImageClassification + preprocessor_config.json + safety.json) once. Inference runs
on ONNX Runtime: on first load the weights are exported to ONNX (opset 17, batch of 1) into a
cache (var/cache/onnx/<fingerprint of the weights>.onnx, written atomically, reused by every
later process, which then needs neither torch nor transformers); if onnxruntime or the export
is unavailable it falls back to torch eager. backend="openvino" serves the same graph in OpenVINO (1.4x
ONNX Runtime on an AVX-512 CPU, the same logits), "openvino-bf16" in bfloat16 where the CPU has the units
for it, with every answer near a line of the verdict run again in float32 (vision_model.openvino_runner),
so the replies are float32's. backend="onnx-int8" adds int8 dynamic quantisation (about 1.8x ONNX
Runtime's float32), which does move replies: "auto" (the default) serves it only for a model whose own
evaluation (metrics.json, written by `evaluate` and shipped by `export`) found it at 100 % parity with
float32 on what the replies show - the verdict and the species named as most likely - over at least
INT8_PARITY_MIN_PHOTOS held-out photos; otherwise checked bfloat16 in OpenVINO on a CPU with bfloat16
units, OpenVINO float32 on others, ONNX Runtime float32 without OpenVINO, torch without either.

Preprocessing is our own PIL + numpy copy of the transformers image processor (resize of the
shortest edge, bicubic; centre crop; rescale; normalise), giving the same numbers without the
processor's per-call overhead; configurations it does not cover use the transformers one.

Several photos of ONE mushroom (`identify`) are combined as the arithmetic mean of their
calibrated probabilities. The mean is the conservative choice: a species (say a deadly
Amanita) that one photo finds likely keeps at least 1/n of that mass, whereas a geometric
mean (mean of log-probs) lets one confident photo veto it. The verdict is decided once, on
the combined distribution.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from config import onnx_files
from vision_model.images import DEFAULT_MAX_PIXELS, decode_image, to_rgb
from vision_model.openvino_runner import (
    FAST_ENERGY_BOUND,
    FAST_PROBABILITY_BOUND,
    OpenVinoRunner,
    native_bf16,
    openvino_available,
)
from vision_model.release import read_labels, read_preprocessor_config, resolve_model_dir
from vision_model.verdict import (
    SafetyConfig,
    decide,
    decision_margin,
    energy_score,
    output_embedding,
    softmax,
)

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ONNX_OPSET = 17
# Bump when the export recipe changes, so old cached graphs are not reused.
EXPORT_RECIPE = "dinov2-logits-batch1-v2"
TOP_K = 5
# Dangerous candidates returned with a result: the most probable few above a small floor. The
# replies decide which to name (knowledge_base.answer.photo_candidates: 0.5 % and up first).
DANGEROUS_SHOWN = 3
DANGEROUS_MIN_PROBABILITY = 0.001
DEFAULT_BATCH_SIZE = 16
# "auto" serves int8 only when the model's evaluation compared at least this many photos (all at parity).
INT8_PARITY_MIN_PHOTOS = 100
BACKENDS = ("auto", "onnx", "onnx-int8", "openvino", "openvino-bf16", "torch")
# Backends whose logits depend on safety.json too: photos near its lines are run again in float32 ("auto" may
# resolve to one).
CHECKED_BACKENDS = ("auto", "openvino-bf16")

ImageInput = Image.Image | bytes | str | os.PathLike


# --- results -------------------------------------------------------------------------


@dataclass
class Prediction:
    label: str
    probability: float


@dataclass
class Identification:
    top_k: list[Prediction]  # calibrated, descending, k=5
    verdict: str  # one of knowledge_base.catalog.VERDICTS
    abstained: bool  # True -> "I can't identify this reliably: treat it as poisonous"
    danger_probability: float  # summed calibrated probability of dangerous (or uncatalogued) species
    model_version: str
    n_images: int = 1  # photos combined into this result
    # The deadly and poisonous species among the candidates, most probable first (at most
    # DANGEROUS_SHOWN): the species behind a dangerous or unknown verdict, named to the user.
    dangerous: list[Prediction] = field(default_factory=list)
    # The model's view of the image(s), small: vision_model.verdict.output_embedding of the logits (for drift
    # monitoring; not part of to_dict).
    embedding: list[float] | None = field(default=None, repr=False)

    @property
    def label(self) -> str:
        """The most probable label (top-1)."""
        return self.top_k[0].label

    def shown_answer(self) -> tuple[str, str | None]:
        """What the reply to this photo tells: the verdict shown and the species named as most likely."""
        from knowledge_base.answer_types import shown_answer

        top = self.top_k[0] if self.top_k else None
        return shown_answer(self.verdict, self.abstained, top and top.label, top.probability if top else 0.0)

    def to_dict(self, image: str | Sequence[str] | None = None) -> dict[str, Any]:
        """The CLI/HTTP JSON shape. `image`: the photo's path (a list for an observation)."""
        return {
            "image": image if image is None or isinstance(image, str) else list(image),
            "top_k": [{"label": p.label, "probability": round(p.probability, 6)} for p in self.top_k],
            "verdict": self.verdict,
            "abstained": self.abstained,
            "danger_probability": round(self.danger_probability, 6),
            "model_version": self.model_version,
            "dangerous": [{"label": p.label, "probability": round(p.probability, 6)} for p in self.dangerous],
        }


# --- preprocessing -------------------------------------------------------------------


class Preprocessor:
    """PIL + numpy equivalent of the BitImageProcessor/ViTImageProcessor path Dinov2 uses."""

    SUPPORTED_KEYS = {
        "image_processor_type", "processor_class", "do_convert_rgb", "do_resize", "size", "resample",
        "do_center_crop", "crop_size", "do_rescale", "rescale_factor", "do_normalize", "image_mean",
        "image_std", "do_pad",
    }  # fmt: skip

    def __init__(self, config: dict[str, Any]) -> None:
        self.do_resize = config.get("do_resize", True)
        size = config.get("size") or {"shortest_edge": 224}
        if isinstance(size, int):
            size = {"shortest_edge": size}
        self.size = size
        self.resample = Image.Resampling(config.get("resample", Image.Resampling.BICUBIC))
        self.do_center_crop = config.get("do_center_crop", True)
        crop = config.get("crop_size") or {"height": 224, "width": 224}
        if isinstance(crop, int):
            crop = {"height": crop, "width": crop}
        self.crop = (int(crop["height"]), int(crop["width"]))
        self.do_rescale = config.get("do_rescale", True)
        self.rescale_factor = float(config.get("rescale_factor", 1 / 255))
        self.do_normalize = config.get("do_normalize", True)
        self.mean = np.asarray(config.get("image_mean", [0.485, 0.456, 0.406]), dtype=np.float32)
        self.std = np.asarray(config.get("image_std", [0.229, 0.224, 0.225]), dtype=np.float32)

    @classmethod
    def supports(cls, config: dict[str, Any]) -> bool:
        size = config.get("size") or {}
        size_ok = isinstance(size, int) or set(size) <= {"shortest_edge"} or set(size) == {"height", "width"}
        return set(config) <= cls.SUPPORTED_KEYS and not config.get("do_pad") and size_ok

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) of the model input."""
        if self.do_center_crop:
            return self.crop
        if "height" in self.size:
            return int(self.size["height"]), int(self.size["width"])
        raise ValueError("input size is not fixed without a centre crop")

    def _resize(self, img: Image.Image) -> Image.Image:
        if "shortest_edge" in self.size:
            # Same arithmetic as transformers.image_transforms.get_resize_output_image_size.
            target = int(self.size["shortest_edge"])
            w, h = img.size
            short, long = (w, h) if w <= h else (h, w)
            new_short, new_long = target, int(target * long / short)
            new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
        else:
            new_h, new_w = int(self.size["height"]), int(self.size["width"])
        if (new_w, new_h) == img.size:
            return img
        return img.resize((new_w, new_h), resample=self.resample)

    def _crop(self, arr: np.ndarray) -> np.ndarray:
        """Centre crop of an HWC array, zero-padding (centred) when the image is smaller."""
        crop_h, crop_w = self.crop
        h, w = arr.shape[:2]
        if h >= crop_h and w >= crop_w:
            top, left = (h - crop_h) // 2, (w - crop_w) // 2
            return arr[top : top + crop_h, left : left + crop_w]
        new_h, new_w = max(crop_h, h), max(crop_w, w)
        padded = np.zeros((new_h, new_w, arr.shape[2]), dtype=arr.dtype)
        top_pad, left_pad = -(-(new_h - h) // 2), -(-(new_w - w) // 2)
        padded[top_pad : top_pad + h, left_pad : left_pad + w] = arr
        top, left = (new_h - crop_h) // 2, (new_w - crop_w) // 2
        return padded[top : top + crop_h, left : left + crop_w]

    def __call__(self, images: Sequence[Image.Image]) -> np.ndarray:
        """RGB PIL images -> float32 array (N, 3, H, W)."""
        out = []
        for img in images:
            if img.mode != "RGB":
                img = img.convert("RGB")
            if self.do_resize:
                img = self._resize(img)
            arr = np.asarray(img)
            if self.do_center_crop:
                arr = self._crop(arr)
            x = arr.astype(np.float32)
            if self.do_rescale:
                x *= np.float32(self.rescale_factor)
            if self.do_normalize:
                x = (x - self.mean) / self.std
            out.append(x.transpose(2, 0, 1))
        return np.ascontiguousarray(np.stack(out), dtype=np.float32)


class _TransformersPreprocessor:
    """Fallback for processor configurations the fast path does not cover."""

    def __init__(self, model_dir: Path) -> None:
        from transformers import AutoImageProcessor

        self._processor = AutoImageProcessor.from_pretrained(model_dir)

    def __call__(self, images: Sequence[Image.Image]) -> np.ndarray:
        batch = self._processor(images=list(images), return_tensors="np")
        return np.asarray(batch["pixel_values"], dtype=np.float32)


def load_preprocessor(model_dir: Path) -> Preprocessor | _TransformersPreprocessor:
    config = read_preprocessor_config(model_dir)
    if Preprocessor.supports(config):
        return Preprocessor(config)
    log.info("preprocessor_config.json has options the fast path lacks; using the transformers processor")
    return _TransformersPreprocessor(model_dir)


# --- runtimes --------------------------------------------------------------------------


def default_threads() -> int:
    return onnx_files.cpu_count()


def onnx_cache_dir() -> Path:
    """Where exported ONNX graphs are cached (VISION_ONNX_CACHE overrides var/cache/onnx)."""
    return Path(os.environ.get("VISION_ONNX_CACHE") or PROJECT_ROOT / "var" / "cache" / "onnx")


def weights_fingerprint(model_dir: Path) -> str:
    """Hash of everything the exported graph depends on: weights, config, input size, recipe."""
    recipe = f"{EXPORT_RECIPE}|opset{ONNX_OPSET}|torch{onnx_files.torch_version()}"
    names = ("config.json", "preprocessor_config.json", "model.safetensors", "pytorch_model.bin")
    return onnx_files.fingerprint(recipe, model_dir, names)[:32]


def _load_torch_model(model_dir: Path):
    import torch
    from transformers import AutoModelForImageClassification

    # fp16 release weights are upcast: CPU fp16 matmuls are slow and less accurate.
    return AutoModelForImageClassification.from_pretrained(model_dir, dtype=torch.float32).eval()


def export_onnx(
    model_dir: Path, out_path: Path, input_size: tuple[int, int], model=None, *, dynamic_batch: bool = False
) -> Path:
    """Export the model's logits to ONNX; atomic write to out_path.

    By default the graph has a fixed batch of 1: with every shape known, ONNX Runtime folds
    the shape arithmetic away, measured 0.38 s vs 0.48 s per photo (1 thread), and on these
    CPUs batching gained nothing (1.6 photos/s at batch 16 vs 1.7 at batch 1). Batches are
    then run photo by photo, which also makes every result independent of batching.
    """
    import torch

    model = model if model is not None else _load_torch_model(model_dir)

    class LogitsOnly(torch.nn.Module):
        def __init__(self, inner) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, pixel_values):
            return self.inner(pixel_values=pixel_values).logits

    out_path.parent.mkdir(parents=True, exist_ok=True)
    dummy = torch.zeros(2 if dynamic_batch else 1, 3, *input_size)
    fd, tmp = tempfile.mkstemp(dir=out_path.parent, prefix=f".{out_path.stem}.", suffix=".onnx.tmp")
    os.close(fd)
    try:
        import warnings

        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer chatter about constant shapes (they are constant)
            torch.onnx.export(
                LogitsOnly(model),
                (dummy,),
                tmp,
                input_names=["pixel_values"],
                output_names=["logits"],
                dynamic_axes={"pixel_values": {0: "batch"}, "logits": {0: "batch"}}
                if dynamic_batch
                else None,
                opset_version=ONNX_OPSET,
                dynamo=False,  # the TorchScript exporter: no onnxscript needed, handles Dinov2
            )
        os.chmod(tmp, 0o644)
        os.replace(tmp, out_path)  # other processes see either no file or a whole one
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out_path


def ensure_onnx(
    model_dir: Path, input_size: tuple[int, int], cache_dir: Path | None = None, *, int8=False
) -> Path:
    """The cached ONNX graph for these weights, exporting it first if needed.

    A `model.onnx` shipped inside the model directory is used as is.
    """
    shipped = model_dir / ("model.int8.onnx" if int8 else "model.onnx")
    if shipped.is_file():
        return shipped
    return onnx_files.cached_graph(Path(cache_dir) if cache_dir is not None else onnx_cache_dir(),
                                   weights_fingerprint(model_dir), "vision_model_onnx",
                                   lambda path: export_onnx(model_dir, path, input_size), int8=int8)


class OnnxRunner:
    def __init__(self, onnx_path: Path, threads: int, int8: bool = False) -> None:
        import onnxruntime as ort

        self.name = "onnx-int8" if int8 else "onnx"
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        # Spin-waiting worker threads make inference several times slower when other processes
        # (the bot, Chroma, training) share the cores - measured 1.0 s vs 0.58 s per photo on a
        # loaded 2-core machine. VISION_ORT_SPINNING=1 turns it back on for dedicated machines.
        spinning = os.environ.get("VISION_ORT_SPINNING", "0") == "1"
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        self.session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        self.path = onnx_path
        self.fixed_batch_of_one = self.session.get_inputs()[0].shape[0] == 1

    def __call__(self, pixel_values: np.ndarray) -> np.ndarray:
        if self.fixed_batch_of_one and len(pixel_values) != 1:
            return np.concatenate([self(pixel_values[i : i + 1]) for i in range(len(pixel_values))])
        return self.session.run(["logits"], {"pixel_values": pixel_values})[0]


class TorchRunner:
    name = "torch"

    def __init__(self, model_dir: Path, model=None) -> None:
        self.model = model if model is not None else _load_torch_model(model_dir)

    def __call__(self, pixel_values: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self.model(pixel_values=torch.from_numpy(pixel_values)).logits.float().numpy()


# --- the classifier ----------------------------------------------------------------------


def catalog_edibility() -> Callable[[str], str]:
    """label -> edibility class from the knowledge-base catalog ("unknown" for a label it lacks)."""
    from knowledge_base.catalog import default_catalog

    catalog = default_catalog()
    return lambda label: catalog.edibility(label) or "unknown"


def int8_at_parity(model_dir: Path) -> bool:
    """Whether the model's own evaluation (metrics.json) found int8 giving every held-out photo the same reply
    as float32 (vision_model.evaluate.backend_parity), over enough photos to mean something."""
    try:
        parity = json.loads((Path(model_dir) / "metrics.json").read_text(encoding="utf-8")).get("parity") or {}
    except (OSError, ValueError):
        return False
    return (parity.get("backend") == "onnx-int8" and parity.get("rate") == 1.0
            and int(parity.get("n") or 0) >= INT8_PARITY_MIN_PHOTOS and "compared" in parity)


def auto_backends(model_dir: Path) -> list[str]:
    """What "auto" tries, in order: int8 only where the model's evaluation found it at parity; then the
    fastest backend whose replies are float32's on this CPU."""
    choices = ["onnx-int8"] if int8_at_parity(model_dir) else []
    if openvino_available():
        choices.append("openvino-bf16" if native_bf16() else "openvino")
    return choices + ["onnx"]


class Classifier:
    """Loads a model directory once; `identify` / `identify_each` are safe from many threads."""

    def __init__(
        self,
        model_dir: Path,
        labels: list[str],
        preprocess: Callable[[Sequence[Image.Image]], np.ndarray],
        runner: Callable[[np.ndarray], np.ndarray],
        safety: SafetyConfig,
        edibility: Callable[[str], str],
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        exact_runner: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> None:
        self.model_dir = model_dir
        self.labels = labels
        self.safety = safety
        self.version = safety.version
        self.batch_size = batch_size
        self.max_pixels = max_pixels
        self._preprocess = preprocess
        self._runner = runner
        # With a fast backend that only approximates float32 (bfloat16): answers near a line are run here again.
        self._exact_runner = exact_runner
        if exact_runner is not None:
            from knowledge_base.answer_types import UNSURE_BELOW  # the reply's "most likely" line

            self._unsure_below = UNSURE_BELOW
        self.photos_run = 0  # photos through `runner`
        self.photos_rerun = 0  # of those, photos run again by `exact_runner`
        # Resolved once: the catalog is fixed for the life of the process.
        table = {label: edibility(label) or "unknown" for label in labels}
        self._edibility = lambda label: table.get(label, "unknown")
        # One inference at a time: ORT/torch already use every core for one batch, and the
        # lock also makes the torch fallback safe to share between threads.
        self._lock = threading.Lock()

    @property
    def backend(self) -> str:
        return getattr(self._runner, "name", type(self._runner).__name__)

    @classmethod
    def load(
        cls,
        model_dir: str | Path | None = None,
        *,
        backend: str | None = None,
        cache_dir: str | Path | None = None,
        threads: int | None = None,
        edibility: Callable[[str], str] | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> Classifier:
        """Load a model directory (None -> the bundled release).

        backend: one of BACKENDS (see the module docstring); default from VISION_BACKEND, else "auto".
        edibility: label -> edibility class (default: the knowledge-base catalog).
        """
        model_dir = resolve_model_dir(model_dir)
        backend = (backend or os.environ.get("VISION_BACKEND") or "auto").lower()
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}: use {', '.join(BACKENDS)}")
        labels = read_labels(model_dir)
        if not labels:
            raise ValueError(f"{model_dir}/config.json has no id2label: not a classification model")
        safety = SafetyConfig.load(model_dir)
        preprocess = load_preprocessor(model_dir)
        threads = threads or default_threads()
        runner, exact_runner = cls._make_runners(model_dir, backend, preprocess, cache_dir, threads)
        return cls(
            model_dir,
            labels,
            preprocess,
            runner,
            safety,
            edibility or catalog_edibility(),
            batch_size=batch_size,
            exact_runner=exact_runner,
        )

    @staticmethod
    def _make_runners(model_dir, backend, preprocess, cache_dir, threads):
        """(runner, exact runner checking its answers near a line, or None). "auto" tries its choices in
        order and ends with torch; a backend asked for by name fails loudly."""
        if backend == "torch":
            return TorchRunner(model_dir), None
        input_size = getattr(preprocess, "input_size", None)
        choices = auto_backends(model_dir) if backend == "auto" else [backend]
        for choice in choices:
            try:
                if input_size is None:
                    raise ValueError("the model input size is not fixed (no centre crop)")
                onnx_path = ensure_onnx(model_dir, input_size, cache_dir, int8=choice == "onnx-int8")
                if choice == "openvino":
                    return OpenVinoRunner(onnx_path, threads), None
                if choice == "openvino-bf16":
                    return (OpenVinoRunner(onnx_path, threads, "bf16"),
                            OpenVinoRunner(onnx_path, threads, lazy=True))
                return OnnxRunner(onnx_path, threads, int8=choice == "onnx-int8"), None
            except Exception as exc:
                if backend != "auto":
                    raise
                log.warning("backend %s unavailable for %s (%s); trying the next", choice, model_dir, exc)
        return TorchRunner(model_dir), None

    # --- inference ---------------------------------------------------------------------

    def _to_image(self, item: ImageInput) -> Image.Image:
        if isinstance(item, Image.Image):
            return to_rgb(item)
        return decode_image(item, max_pixels=self.max_pixels)

    def logits(self, images: Sequence[ImageInput]) -> np.ndarray:
        """Raw logits (N, n_labels), in batches of `batch_size`. Raises ImageError on a bad photo.
        With a fast backend checked by an exact one, each photo's reply is float32's."""
        return self._logits(images)[0]

    def _run(self, runner, pixel_values: np.ndarray) -> np.ndarray:
        with self._lock:
            return np.asarray(runner(pixel_values), dtype=np.float32)

    def _far_from_lines(self, probs: np.ndarray, energy: float) -> bool:
        """Whether the fast backend's answer is one the exact backend would give too (openvino_runner)."""
        gap, energy_gap = decision_margin(probs, self.labels, self._edibility, self.safety, energy=energy,
                                          unsure_below=self._unsure_below)
        return gap >= FAST_PROBABILITY_BOUND and energy_gap >= FAST_ENERGY_BOUND

    def _rerun_exactly(self, logits: np.ndarray, pixel_values: np.ndarray, rows: np.ndarray) -> None:
        """Replace `rows` (a mask) of `logits` by the exact backend's."""
        if rows.any():
            logits[rows] = self._run(self._exact_runner, pixel_values[rows])
            self.photos_rerun += int(rows.sum())

    def _logits(self, images: Sequence[ImageInput]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(logits, pixel values, which photos were run again exactly) of every photo."""
        decoded = [self._to_image(item) for item in images]
        if not decoded:
            raise ValueError("no images given")
        chunks, pixels = [], []
        for start in range(0, len(decoded), self.batch_size):
            pixels.append(self._preprocess(decoded[start : start + self.batch_size]))
            chunks.append(self._run(self._runner, pixels[-1]))
        logits, pixel_values = np.concatenate(chunks), np.concatenate(pixels)
        self.photos_run += len(logits)
        rerun = np.zeros(len(logits), dtype=bool)
        if self._exact_runner is not None:
            t = self.safety.temperature
            rerun = np.array([not self._far_from_lines(p, float(e))
                              for p, e in zip(softmax(logits, t), energy_score(logits, t), strict=True)])
            self._rerun_exactly(logits, pixel_values, rerun)
        return logits, pixel_values, rerun

    def probabilities(self, images: Sequence[ImageInput]) -> np.ndarray:
        """Calibrated probabilities (N, n_labels): softmax(logits / temperature)."""
        return softmax(self.logits(images), self.safety.temperature)

    def _identification(self, probs: np.ndarray, energy: float, n_images: int, logits: np.ndarray) -> Identification:
        result = decide(probs, self.labels, self._edibility, self.safety, energy=energy)
        k = min(TOP_K, len(self.labels))
        order = np.argsort(-probs, kind="stable")
        top = order[:k]
        dangerous = [Prediction(self.labels[i], float(probs[i])) for i in order
                     if self._edibility(self.labels[i]) in ("deadly", "poisonous")
                     and probs[i] >= DANGEROUS_MIN_PROBABILITY][:DANGEROUS_SHOWN]
        return Identification(
            dangerous=dangerous,
            top_k=[Prediction(self.labels[i], float(probs[i])) for i in top],
            verdict=result.verdict,
            abstained=result.abstained,
            danger_probability=result.danger_probability,
            model_version=self.version,
            n_images=n_images,
            embedding=output_embedding(logits)[0].tolist(),
        )

    def identify(self, images: Sequence[ImageInput] | ImageInput) -> Identification:
        """Several photos of ONE mushroom -> one result (mean of calibrated probabilities)."""
        if isinstance(images, Image.Image | bytes | str | os.PathLike):
            images = [images]
        logits, pixel_values, rerun = self._logits(images)
        probs = softmax(logits, self.safety.temperature).mean(axis=0)
        energy = float(energy_score(logits, self.safety.temperature).mean())
        if self._exact_runner is not None and not rerun.all() and not self._far_from_lines(probs, energy):
            # Each photo is far enough from a line, the combined answer is not: the others exactly too.
            self._rerun_exactly(logits, pixel_values, ~rerun)
            probs = softmax(logits, self.safety.temperature).mean(axis=0)
            energy = float(energy_score(logits, self.safety.temperature).mean())
        return self._identification(probs, energy, len(logits), logits.mean(axis=0))

    def identify_each(self, images: Sequence[ImageInput]) -> list[Identification]:
        """One result per photo (each its own mushroom); decoded and preprocessed as one batch."""
        logits = self.logits(images)
        probs = softmax(logits, self.safety.temperature)
        energies = energy_score(logits, self.safety.temperature)
        return [self._identification(p, float(e), 1, row) for p, e, row in zip(probs, energies, logits, strict=True)]


_shared: dict[str, Classifier] = {}
_shared_lock = threading.Lock()


def shared_classifier(model_dir: str | Path | None = None) -> Classifier:
    """One Classifier per model directory per process (loaded on first use)."""
    key = str(resolve_model_dir(model_dir))
    with _shared_lock:
        if key not in _shared:
            _shared[key] = Classifier.load(model_dir)
        return _shared[key]
