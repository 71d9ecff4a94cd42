"""End to end through the ingest side: reingest() a tiny guide into a tmp Chroma, then
Answerer.from_settings() opens the serving version and cites it."""

import pytest
from kb_support import make_catalog, one_torch_thread

from bot.settings import Settings
from knowledge_base.answer import Answerer
from knowledge_base.catalog import default_catalog

GUIDE = """STUDIES OF TEST FUNGI

=Paxillus involutus= (Batsch.) Fr. =Edible.=--This plant is quite common on the ground in woods and
in lawns. The margin of the cap is strongly rolled inward, and the gills are decurrent and bruise brown
when handled. It is much eaten in some countries.

=Amanita phalloides= Fr. =Deadly Poisonous.=--The deadly amanita has a greenish cap, white gills, a
ring on the stem and a bulbous base sheathed in a cup, the volva.
"""


@pytest.fixture(scope="module")
def answerer(tmp_path_factory):
    pipeline = pytest.importorskip("ingest.pipeline")
    root = tmp_path_factory.mktemp("kb_index")
    guides = root / "guides"
    guides.mkdir()
    (guides / "test_guide_1900.txt").write_text(GUIDE)
    settings = Settings(CHROMA_PATH=root / "chroma", GUIDES_DIR=guides, LLM_BASE_URL=None)
    with one_torch_thread():
        report = pipeline.reingest(settings, catalog=make_catalog())
        assert report.status == "built", report.error
        yield Answerer.from_settings(settings)


def test_from_settings_opens_the_serving_index(answerer):
    assert answerer.retriever is not None and len(answerer.retriever) > 0


def test_answer_cites_the_ingested_guide_and_flags_it_outdated(answerer):
    catalog = default_catalog()
    if "paxillus_involutus" not in catalog:
        pytest.skip("catalog has no paxillus_involutus yet")
    with one_torch_thread():
        answer = answerer.ask("Is Paxillus involutus edible?")
    assert answer.species == "paxillus_involutus"
    assert answer.verdict == catalog.edibility("paxillus_involutus")
    assert any("rolled inward" in c.excerpt for c in answer.citations)
    if answer.verdict != "edible":
        assert "outdated" in answer.answer
