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
    fp32 = np.asarray(embeddings.MiniLMEmbeddings(precision="fp32").embed_documents(TEXTS))
    for precision in ("int8", "int8-dynamic"):
        int8 = np.asarray(embeddings.MiniLMEmbeddings(precision=precision).embed_documents(TEXTS))
        assert np.allclose(np.linalg.norm(int8, axis=1), 1.0, atol=1e-4)
        cosine = [float(np.dot(a, b)) for a, b, text in zip(int8, fp32, TEXTS, strict=True) if text]
        # Close, yet not the same vectors. (The empty passage, which no chunk and no question is, is left
        # out: static int8 moves its vector most, to a cosine of about 0.93.)
        assert 0.97 < min(cosine) and max(cosine) < 0.99999, (precision, cosine)
    assert embeddings.embedding_id("int8") != embeddings.embedding_id("fp32") == embeddings.MODEL_NAME
    # Queries go with what an index recorded; an index from before ids were recorded holds float32.
    assert embeddings.embeddings_for(embeddings.MODEL_NAME).precision == "fp32"
    assert embeddings.embeddings_for(None).precision == "fp32"
    assert embeddings.embeddings_for(embeddings.embedding_id("int8")).precision == "int8"
    # An index of the previous default (ONNX Runtime's dynamic int8) is still queried with its own vectors
    # while its rebuild runs in the background.
    dynamic = embeddings.embedding_id("int8-dynamic")
    assert dynamic == f"{embeddings.MODEL_NAME}/int8-fused-attention-per-channel" != embeddings.embedding_id("int8")
    assert embeddings.embeddings_for(dynamic).precision == "int8-dynamic"
    with pytest.raises(ValueError, match="rebuild it"):
        embeddings.embeddings_for("some-other-model")
    monkeypatch.setenv("EMBEDDING_PRECISION", "fp32")
    assert embeddings.default_embeddings().embedding_id == embeddings.MODEL_NAME
    monkeypatch.setenv("EMBEDDING_PRECISION", "int4")
    with pytest.raises(ValueError, match="int8, int8-dynamic, fp32"):
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


def test_a_cold_query_process_does_not_import_torch_or_the_quantiser():
    code = ("import sys\nfrom knowledge_base.embeddings import MiniLMEmbeddings\n"
            "v = MiniLMEmbeddings().embed_query('is the death cap deadly?')\n"
            "print(len(v), 'torch' in sys.modules, 'sentence_transformers' in sys.modules, 'nncf' in sys.modules,"
            " 'openvino' in sys.modules)\n")
    env = {**os.environ, "EMBEDDING_BACKEND": "onnx"}
    embeddings.ensure_openvino_int8(embeddings.default_model_path())  # the one-time export (an ingest's job)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["384", "False", "False", "False", "True"]  # served by OpenVINO, no torch


def test_the_default_int8_is_static_int8_in_openvino():
    """Why the default is about 3.6x sentence-transformers on an AVX2 CPU and not 2.3x: every matrix product
    of the transformer takes int8 activations as well as int8 weights (NNCF's FakeQuantize on both inputs),
    so OpenVINO runs them all in its int8 kernels. A quantiser that silently left them in float32 would pass
    every vector test and lose the speed."""
    import openvino as ov

    encoder = embeddings.load_encoder(precision="int8")
    assert isinstance(encoder, embeddings.OpenVinoEncoder)
    model = ov.Core().read_model(str(embeddings.ensure_openvino_int8(embeddings.default_model_path())))
    ops = model.get_ordered_ops()
    matmuls = [op for op in ops if op.get_type_name() == "MatMul"]

    def skip(node):  # layout and type changes between a quantiser node and the product
        while node.get_type_name() in ("Transpose", "Reshape"):
            node = node.input_value(0).get_node()
        return node

    def int8_activation(node) -> bool:
        return skip(node).get_type_name() == "FakeQuantize"

    def int8_weight(node) -> bool:  # int8 constant -> Convert -> Multiply by its scale
        node = skip(node)
        if node.get_type_name() != "Multiply":
            return False
        convert = node.input_value(0).get_node()
        constant = convert.input_value(0).get_node() if convert.get_type_name() == "Convert" else convert
        return constant.get_type_name() == "Constant" and constant.get_element_type() == ov.Type.i8

    dense = [op for op in matmuls if int8_weight(op.input_value(1).get_node())]
    assert len(dense) == 6 * 6  # q, k, v, output and the two feed-forward products of each of the 6 layers
    assert all(int8_activation(op.input_value(0).get_node()) for op in dense)
    scores = [op for op in matmuls if all(int8_activation(op.input_value(i).get_node()) for i in (0, 1))]
    assert len(scores) == 6  # query x key in each layer


def test_the_quantised_graph_is_named_by_its_calibration_text(tmp_path, monkeypatch):
    """The calibration text is part of what the vectors are: another text names another cached graph, and the
    graph is made from the fixed file in the repository, never from the guides being indexed."""
    from knowledge_base import openvino_int8

    made = []
    monkeypatch.setattr(embeddings, "export_onnx", lambda model, out, fuse=True: made.append(("export", fuse)) or out)
    monkeypatch.setattr(openvino_int8, "quantize",
                        lambda plain, xml, feeds: made.append(("quantize", len(list(feeds)))) or xml.write_text("x"))
    model_path = embeddings.default_model_path()
    first = embeddings.ensure_openvino_int8(model_path, cache_dir=tmp_path)
    assert made == [("export", False), ("quantize", len(openvino_int8.calibration_texts()))]
    assert len(openvino_int8.calibration_texts()) >= 200
    assert embeddings.ensure_openvino_int8(model_path, cache_dir=tmp_path) == first and len(made) == 2  # cached
    other = tmp_path / "other.txt"
    other.write_text("Another calibration text.\n", encoding="utf-8")
    monkeypatch.setattr(openvino_int8, "CALIBRATION_FILE", other)
    second = embeddings.ensure_openvino_int8(model_path, cache_dir=tmp_path)
    assert second != first and made[-1] == ("quantize", 1)


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


def test_quantising_writes_a_whole_graph_and_prints_nothing(tmp_path, capfd):
    """NNCF's own progress bars and INFO lines would cut through the console conversation while the first
    build prepares the model in the background: the quantiser runs quiet, and leaves an .xml with its .bin."""
    import openvino as ov
    from transformers import BertConfig, BertModel

    from knowledge_base import openvino_int8

    tiny = tmp_path / "tiny-bert"
    BertModel(BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=32)).save_pretrained(tiny)
    plain = embeddings.export_onnx(tiny, tmp_path / "plain.onnx", fuse=False)
    rng = np.random.default_rng(0)
    feeds = [{"input_ids": rng.integers(1, 64, (1, n)), "attention_mask": np.ones((1, n), np.int64),
              "token_type_ids": np.zeros((1, n), np.int64)} for n in (3, 9, 17)]
    (tmp_path / "out").mkdir()
    capfd.readouterr()
    xml = openvino_int8.quantize(plain, tmp_path / "out" / "tiny.ov-int8.xml", feeds)
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    assert xml.is_file() and xml.with_suffix(".bin").is_file()
    assert sorted(p.name for p in xml.parent.iterdir()) == ["tiny.ov-int8.bin", "tiny.ov-int8.xml"]  # no leftovers
    ops = [op.get_type_name() for op in ov.Core().read_model(str(xml)).get_ordered_ops()]
    assert "FakeQuantize" in ops
