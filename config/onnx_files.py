"""Files both models keep of their ONNX exports: the fingerprint that names a cached graph, the int8
quantisation, and the cache folder that falls back to a temporary one on a read-only image.

In the bottom layer because two packages of the same rank need it: vision_model (the classifier) and
knowledge_base (the sentence embeddings).
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

log = logging.getLogger(__name__)


def cpu_count() -> int:
    """The cores this process may run on (the affinity mask, where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def torch_version() -> str:
    """From package metadata: importing torch would cost seconds in a process that only needs the cached
    graph. "none" without torch (the graph must then already be cached)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("torch")
    except PackageNotFoundError:
        return "none"


def fingerprint(recipe: str, folder: Path, names: Iterable[str]) -> str:
    """SHA-256 (hex) of `recipe` and the files `names` of `folder` that exist: what an export depends on."""
    digest = hashlib.sha256(recipe.encode())
    for name in names:
        path = folder / name
        if path.is_file():
            digest.update(name.encode())
            with path.open("rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


def writable_dir(preferred: Path, fallback_name: str) -> Path:
    """The cache folder, or a per-user temporary one when it cannot be written (read-only image)."""
    try:
        preferred.mkdir(parents=True, exist_ok=True)
        if os.access(preferred, os.W_OK):
            return preferred
    except OSError:
        pass
    fallback = Path(tempfile.gettempdir()) / f"{fallback_name}_{os.getuid() if hasattr(os, 'getuid') else 0}"
    log.warning("ONNX cache %s is not writable; using %s", preferred, fallback)
    fallback.mkdir(parents=True, exist_ok=True)
    return fallback


def cached_file(preferred: Path, name: str, fallback_name: str, make: Callable[[Path], object]) -> Path:
    """`name` in the cache: found where it is (e.g. made into a read-only cache at image build time), else
    made once by `make(path)` in the cache, or in a temporary one where the cache cannot be written."""
    if (preferred / name).is_file():
        return preferred / name
    path = writable_dir(preferred, fallback_name) / name
    if not path.is_file():
        make(path)
    return path


def cached_graph(
    preferred: Path, stem: str, fallback_name: str, export: Callable[[Path], object], *, int8: bool = False,
    int8_ops: Iterable[str] = ("MatMul",),
) -> Path:
    """`<stem>.onnx` (or `<stem>.int8.onnx`) in the cache (`cached_file`): exported by `export(path)` once,
    and quantised once for int8."""

    def exported(path: Path) -> None:
        log.info("exporting to ONNX (once per set of weights) -> %s", path)
        export(path)

    def fp32() -> Path:
        return cached_file(preferred, f"{stem}.onnx", fallback_name, exported)

    if not int8:
        return fp32()
    return cached_file(preferred, f"{stem}.int8.onnx", fallback_name,
                       lambda path: quantize_int8(fp32(), path, int8_ops))


def quantize_int8(fp32_path: Path, out_path: Path, ops: Iterable[str] = ("MatMul",)) -> Path:
    """int8 dynamic quantisation of the weights of the `ops` nodes, per output channel (atomic write)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # The quantiser logs advice through the root logger, which would also configure logging for the whole
    # process (logging.basicConfig): a handler keeps it from doing that, a filter drops the advice.
    root = logging.getLogger()
    guard = logging.NullHandler() if not root.handlers else None
    advice = logging.Filter()
    advice.filter = lambda record: "onnxruntime" not in record.pathname  # type: ignore[method-assign]
    if guard is not None:
        root.addHandler(guard)
    root.addFilter(advice)
    fd, tmp = tempfile.mkstemp(dir=out_path.parent, prefix=f".{out_path.stem}.", suffix=".onnx.tmp")
    os.close(fd)
    try:
        quantize_dynamic(str(fp32_path), tmp, weight_type=QuantType.QInt8, op_types_to_quantize=list(ops),
                         per_channel=True, extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        os.chmod(tmp, 0o644)
        os.replace(tmp, out_path)  # other processes see no file or a whole one
    finally:
        root.removeFilter(advice)
        if guard is not None:
            root.removeHandler(guard)
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out_path


def openvino_request(graph: Path, threads: int, precision: str | None = None):
    """An OpenVINO infer request for `graph` (ONNX or IR) compiled for this CPU. LATENCY: one stream using every
    core for each input, as ONNX Runtime's intra-op threads do. `precision` ("f32", "bf16"): the inference
    precision hint (None: the plugin's choice, bfloat16 on CPUs with bfloat16 units). OpenVINO's own cache of
    compiled kernels sits beside the graph: 0.13 s to load instead of 0.5 s to compile (the embedding), which a
    cold start feels; skipped where the folder is read-only (an image)."""
    import openvino as ov

    config: dict = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
    if precision is not None:
        config["INFERENCE_PRECISION_HINT"] = precision
    kernels = graph.parent / "openvino-compiled"
    try:
        kernels.mkdir(exist_ok=True)
        if os.access(kernels, os.W_OK):
            config["CACHE_DIR"] = str(kernels)
    except OSError:
        pass
    return ov.Core().compile_model(str(graph), "CPU", config).create_infer_request()
