"""Hybrid retrieval (Chroma vectors + BM25, RRF) on a tiny real Chroma collection."""

import pytest
from kb_support import GUIDE_DOCS, one_torch_thread, shared_store

from knowledge_base.retrieval import HybridRetriever, tokenize


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_torch_thread():
        yield

@pytest.fixture(scope="module")
def retriever(tmp_path_factory):
    return HybridRetriever(shared_store(tmp_path_factory))


def test_tokenize_keeps_latin_names_whole():
    assert tokenize("=Amanita phalloides= Fr. is the DEATH cap!") == ["amanita", "phalloide", "fr", "death", "cap"]


def test_reads_every_chunk_for_bm25(retriever):
    assert len(retriever) == len(retriever.store.get()["ids"]) >= len(GUIDE_DOCS)


def test_species_filter_restricts_both_searches(retriever):
    passages = retriever.search("what does the cap look like", species="amanita_muscaria", k=5)
    assert passages
    assert {p.species for p in passages} == {"amanita_muscaria"}


def test_latin_name_found_lexically_without_filter(retriever):
    passages = retriever.search("Paxillus involutus", k=3)
    assert passages[0].species == "paxillus_involutus"
    assert passages[0].ranks.get("bm25") == 1


def test_paraphrase_found_by_vectors(retriever):
    passages = retriever.search("how can I get the colour of the spores on paper", k=3)
    top = passages[0]
    assert "spore" in top.text.lower()
    assert top.similarity is not None and top.similarity > 0.3


def test_fused_scores_are_descending_and_k_respected(retriever):
    passages = retriever.search("poisonous amanita with a ring and a volva", k=4)
    assert len(passages) == 4
    scores = [p.score for p in passages]
    assert scores == sorted(scores, reverse=True)


def test_species_with_few_chunks_is_topped_up_by_name_mentions(retriever):
    # Only two chunks carry the label; the top-up adds chunks that name the species elsewhere.
    passages = retriever.search("death cap", species="amanita_phalloides", k=5,
                                names=["Amanita phalloides", "Agaricus phalloides"])
    assert all(p.species == "amanita_phalloides" or "phalloides" in p.text.lower() for p in passages)


def test_empty_retriever_returns_nothing():
    assert HybridRetriever(None, []).search("death cap") == []
