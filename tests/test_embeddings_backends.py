"""The sentence embeddings without torch (issue 25): the ONNX backend gives sentence-transformers' vectors,
so an index built with one is searched with the other; a cold query process never imports torch; the
lexical (BM25) side of an index version is read from one file instead of rebuilt from the collection."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from langchain_core.documents import Document

from knowledge_base import embeddings
from knowledge_base.retrieval import HybridRetriever, read_lexical_cache, tokenize

ROOT = Path(__file__).resolve().parent.parent
TEXTS = [
    "Amanita phalloides, the death cap: olive-green cap, white gills, a ring and a volva at the base.",
    "chanterell or false chanterell?? gills forked",
    "Knollenblätterpilz – tödlich giftig ☠",
    "",  # an empty passage still gets a (unit) vector
    " ".join(["The volva is a cup-like sac at the base of the stem."] * 60),  # beyond 256 word pieces: truncated
]


def test_the_onnx_backend_gives_the_reference_vectors():
    onnx = embeddings.MiniLMEmbeddings(backend="onnx", precision="fp32").embed_documents(TEXTS)
    torch = embeddings.MiniLMEmbeddings(backend="torch", precision="fp32").embed_documents(TEXTS)
    a, b = np.asarray(onnx), np.asarray(torch)
    assert a.shape == b.shape == (len(TEXTS), embeddings.EMBEDDING_DIM)
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-4)
    assert float((a * b).sum(axis=1).min()) > 0.9999
    # Batching and order do not change a vector (padding is masked out of the mean).
    alone = embeddings.MiniLMEmbeddings(backend="onnx", precision="fp32").embed_query(TEXTS[1])
    assert float(np.dot(alone, a[1])) > 0.99999


def test_int8_vectors_are_close_but_never_share_an_index_with_fp32(monkeypatch):
    int8 = np.asarray(embeddings.MiniLMEmbeddings(precision="int8").embed_documents(TEXTS))
    fp32 = np.asarray(embeddings.MiniLMEmbeddings(precision="fp32").embed_documents(TEXTS))
    cosine = (int8 * fp32).sum(axis=1)
    assert 0.95 < float(cosine.min()) < 0.99999  # close, yet not the same vectors
    assert embeddings.embedding_id("int8") != embeddings.embedding_id("fp32") == embeddings.MODEL_NAME
    # Queries go with what an index recorded; an index from before ids were recorded holds float32.
    assert embeddings.embeddings_for(embeddings.MODEL_NAME).precision == "fp32"
    assert embeddings.embeddings_for(None).precision == "fp32"
    assert embeddings.embeddings_for(embeddings.embedding_id("int8")).precision == "int8"
    with pytest.raises(ValueError, match="rebuild it"):
        embeddings.embeddings_for("some-other-model")
    monkeypatch.setenv("EMBEDDING_PRECISION", "fp32")
    assert embeddings.default_embeddings().embedding_id == embeddings.MODEL_NAME
    monkeypatch.setenv("EMBEDDING_PRECISION", "int4")
    with pytest.raises(ValueError, match="int8, fp32"):
        embeddings.precision_name()
    with pytest.raises(ValueError, match="float32 vectors only"):
        embeddings.load_encoder(backend="torch", precision="int8")


def test_the_graph_is_fused_and_int8_quantises_the_attention():
    """Why int8 is about 2x sentence-transformers and not 1.2x: one fused attention kernel per layer, whose
    projections int8 quantises too (QAttention). An export the fusion no longer recognises (e.g. a
    transformers release that traces attention differently) would pass every vector test and lose it."""
    import onnx

    model_path = embeddings.default_model_path()
    fp32 = onnx.load(str(embeddings.ensure_onnx(model_path)), load_external_data=False)
    int8 = onnx.load(str(embeddings.ensure_onnx(model_path, int8=True)), load_external_data=False)
    fp32_ops = [node.op_type for node in fp32.graph.node]
    int8_ops = [node.op_type for node in int8.graph.node]
    assert fp32_ops.count("Attention") == 6 and "Softmax" not in fp32_ops  # one per layer, nothing unfused
    assert int8_ops.count("QAttention") == 6 and "Attention" not in int8_ops
    assert "MatMul" not in int8_ops  # every remaining MatMul runs in int8


def test_a_cold_query_process_does_not_import_torch():
    code = ("import sys\nfrom knowledge_base.embeddings import MiniLMEmbeddings\n"
            "v = MiniLMEmbeddings().embed_query('is the death cap deadly?')\n"
            "print(len(v), 'torch' in sys.modules, 'sentence_transformers' in sys.modules)\n")
    env = {**os.environ, "EMBEDDING_BACKEND": "onnx"}
    embeddings.ensure_onnx(embeddings.default_model_path(), int8=True)  # the one-time export (an ingest's job)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["384", "False", "False"]


def test_an_unknown_backend_is_refused_with_the_choices(monkeypatch):
    monkeypatch.setenv("EMBEDDING_BACKEND", "gpu")
    with pytest.raises(ValueError, match="onnx, torch"):
        embeddings.backend_name()


def test_the_export_goes_to_a_temporary_cache_when_the_cache_is_read_only(tmp_path, monkeypatch):
    exported = []
    monkeypatch.setattr(embeddings, "export_onnx", lambda model, out: exported.append(out) or out)
    locked = tmp_path / "read-only"
    monkeypatch.setattr(embeddings.os, "access", lambda path, mode: Path(path) != locked)  # (tests run as root)
    path = embeddings.ensure_onnx(embeddings.default_model_path(), cache_dir=locked)
    assert exported == [path] and not str(path).startswith(str(locked))
    assert path.name.startswith("minilm-") and path.parent.name.startswith("mushroom_minilm_onnx_")


# --- the lexical side on disk --------------------------------------------------------------------
class CountingStore:
    """Just enough of a LangChain Chroma store for the lexical side: `get` is counted."""

    def __init__(self, docs: list[Document]):
        self.docs, self.reads = docs, 0

    def get(self, include):
        self.reads += 1
        return {"documents": [d.page_content for d in self.docs], "metadatas": [d.metadata for d in self.docs]}


DOCS = [Document(page_content=t, metadata={"chunk_id": f"c{i}", "species": s, "source": "guide.md", "start": i})
        for i, (t, s) in enumerate([
            ("The death cap has a volva and a white ring.", "amanita_phalloides"),
            ("Chanterelles have blunt forked ridges instead of gills.", "cantharellus_cibarius"),
            ("The fly agaric is red with white warts.", "amanita_muscaria"),
        ])]


def lexical_only(retriever: HybridRetriever, query: str) -> list[str]:
    return [d.metadata["chunk_id"] for d, _ in retriever._lexical(query, 3, None)]


def test_the_lexical_index_is_written_once_and_read_back(tmp_path):
    cache = tmp_path / "lexical" / "target--guides_v1-abc.json"
    store = CountingStore(DOCS)
    assert HybridRetriever(None, cache_file=cache)._bm25 is None and not cache.exists()  # nothing to cache

    built = HybridRetriever(store, cache_file=cache)
    assert store.reads == 1 and cache.is_file()
    docs, tokens = read_lexical_cache(cache)
    assert [d.page_content for d in docs] == [d.page_content for d in DOCS]
    assert tokens == [tokenize(d.page_content) for d in DOCS]

    again = HybridRetriever(store, cache_file=cache)
    assert store.reads == 1  # read from the file, not from the collection
    assert lexical_only(again, "volva ring") == lexical_only(built, "volva ring") == ["c0"]
    assert again._by_species == built._by_species

    # Another version of the same index replaces the file; a damaged file is rebuilt from the collection.
    newer = cache.with_name("target--guides_v2-def.json")
    HybridRetriever(store, cache_file=newer)
    assert newer.is_file() and not cache.exists()
    newer.write_text("{not json", encoding="utf-8")
    rebuilt = HybridRetriever(store, cache_file=newer)
    assert store.reads == 3 and lexical_only(rebuilt, "forked ridges") == ["c1"]
    assert json.loads(newer.read_text(encoding="utf-8"))["format"] == 1
