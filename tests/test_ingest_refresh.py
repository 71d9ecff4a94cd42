"""Guides that appear or change after the index was built come in by themselves: a cheap hash check at
start, a re-ingest in the background while the old version serves, said once (issue 25, item 3)."""

from __future__ import annotations

import os

from bot_support import make_core, make_settings, tiny_model

from ingest.pipeline import reingest, source_changes
from ingest.testing import write_tiny_guides
from knowledge_base.catalog import default_catalog

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def build(settings):
    # The catalog's fingerprint is the real one (what a start compares with); its passages are left out
    # to keep the test fast, and the refresh builds the same kind of index.
    report = reingest(settings, catalog=default_catalog(), include_catalog=False)
    assert report.status == "built", report.error


def test_a_new_or_changed_guide_is_noticed_by_its_hash(tmp_path):
    guides = write_tiny_guides(tmp_path / "guides")
    settings = make_settings(tmp_path, GUIDES_DIR=guides)
    assert source_changes(settings) == []  # no index yet: ensure_index's case, not a refresh
    build(settings)
    assert source_changes(settings) == []
    (guides / "extra.md").write_text("# Amanita phalloides\n\nA passage added later.\n", encoding="utf-8")
    first = sorted(p.name for p in guides.iterdir() if p.name != "extra.md")[0]
    (guides / first).write_text((guides / first).read_text(encoding="utf-8") + "\nOne more line.\n",
                                encoding="utf-8")
    assert source_changes(settings) == sorted(["extra.md", first])
    (guides / "extra.md").unlink()
    assert source_changes(settings) == [first]
    # A process that cannot see the guides (a pod without their volume) never calls them removed:
    # a rebuild from there would drop them all.
    assert source_changes(make_settings(tmp_path, GUIDES_DIR=tmp_path / "not-mounted")) == []


def test_the_console_refreshes_in_the_background_and_follows(tmp_path, capsys):
    from bot.console import refresh_knowledge_base
    from knowledge_base.answer import Answerer

    guides = write_tiny_guides(tmp_path / "guides")
    settings = make_settings(tmp_path, GUIDES_DIR=guides)
    build(settings)
    core = make_core(settings, tiny_model(str(tmp_path / "models"), "amanita_phalloides"), answerer=None,
                     answerer_factory=lambda: Answerer.from_settings(settings))
    capsys.readouterr()  # (the tiny model's loading bars)
    assert refresh_knowledge_base(settings, core) is None  # nothing changed: nothing said, nothing run
    assert "changed" not in capsys.readouterr().err

    core.engine.get_answerer()  # answering from version 1
    assert core.engine.index_info["collection"] == "guides_v1"
    (guides / "extra.md").write_text("# Amanita phalloides\n\nThe volva of the death cap, said later.\n",
                                     encoding="utf-8")
    thread = refresh_knowledge_base(settings, core)
    said = capsys.readouterr().err
    assert "changed since the knowledge base was built (extra.md)" in said and "background" in said
    thread.join(timeout=300)
    assert "Knowledge base update: " in capsys.readouterr().err
    assert core.engine.index_info["collection"] == "guides_v2"  # followed at once, no restart
    assert source_changes(settings) == []
    core.close()


def test_the_first_start_answers_at_once_while_the_index_is_built(tmp_path, capsys, monkeypatch):
    """The console's first start no longer waits for the index: photos are identified and questions are
    answered from the catalog (saying so, with the build's progress) until the build is in, then followed."""
    import asyncio
    import io
    import threading

    from bot_support import jpeg

    from bot.console import refresh_knowledge_base, run_console
    from ingest import pipeline
    from knowledge_base.answer import Answerer
    from knowledge_base.embeddings import MiniLMEmbeddings

    guides = write_tiny_guides(tmp_path / "guides")
    settings = make_settings(tmp_path, GUIDES_DIR=guides)
    real_reingest = pipeline.reingest  # the guides without the catalog's 1,300 passages: a fast test
    monkeypatch.setattr(pipeline, "reingest", lambda s, **kw: real_reingest(s, **{**kw, "include_catalog": False}))
    release = threading.Event()
    real_embed = MiniLMEmbeddings.embed_documents

    def held(self, texts):  # the build waits here until the test has talked to the console
        assert release.wait(120)
        return real_embed(self, texts)

    monkeypatch.setattr(MiniLMEmbeddings, "embed_documents", held)
    core = make_core(settings, tiny_model(str(tmp_path / "models"), "amanita_phalloides"), answerer=None,
                     answerer_factory=lambda: Answerer.from_settings(settings))
    capsys.readouterr()
    thread = refresh_knowledge_base(settings, core)
    assert thread is not None and "Building the knowledge base in the background" in capsys.readouterr().err

    photo = tmp_path / "cap.jpg"
    photo.write_bytes(jpeg((200, 200, 180)))

    def console(lines: str) -> str:
        out = io.StringIO()
        asyncio.run(run_console(core, settings, io.StringIO(lines), out))
        return out.getvalue()

    during = console(f"/identify {photo}\n/status\nwhat does the death cap look like?\n")
    assert "DEADLY" in during.upper() and "death cap" in during.lower()  # the photo is answered at once
    assert "Index: being built (" in during and "from the species catalog until then" in during
    assert "The field guides are still being indexed: " in during
    assert thread.is_alive()

    release.set()
    thread.join(timeout=300)
    assert "Knowledge base update: " in capsys.readouterr().err and "built" in core._status_text().lower()
    after = console("what does the death cap look like?\n")
    assert "still being indexed" not in after
    assert core.engine.index_info["collection"] == "guides_v1" and core.engine.index_loaded
    assert core.engine.building_index is None
    core.close()


def test_build_progress_says_where_it_is_and_how_long_is_left():
    from ingest.progress import BuildProgress, about

    now = [100.0]
    seen = []
    progress = BuildProgress(lambda *report: seen.append(report), clock=lambda: now[0])
    assert progress.describe() == "starting" and progress.seconds_left() is None
    progress(1, 1, "load")
    assert progress.describe() == "reading the guides"
    progress(0, 2834, "embed")
    assert progress.describe() == "embedding passages 0 of 2,834 (0 %)"  # no rate yet: no estimate
    now[0] += 60
    progress(1417, 2834, "embed")
    assert progress.seconds_left() == 60
    assert progress.describe() == "embedding passages 1,417 of 2,834 (50 %), about 60 s left"
    now[0] += 30
    progress(2000, 2834, "embed")  # 2000 passages in 90 s: 834 more take about 38 s
    assert progress.describe().endswith("(70 %), about 40 s left")
    progress.finish()
    assert progress.describe() == "finished" and progress.seconds_left() is None
    assert seen[-1] == (2000, 2834, "embed") and len(seen) == 4
    assert [about(s) for s in (3, 44, 200, 3600)] == ["a few seconds", "about 40 s", "about 3 min", "about 60 min"]


def test_a_build_embeds_steps_of_like_length_with_an_honest_estimate_from_the_start():
    from langchain_core.documents import Document

    from ingest.pipeline import embedding_steps

    lengths = [(i * 7919) % 997 + 3 for i in range(1000)]  # a spread of lengths in document order
    chunks = [Document(page_content="x" * n, metadata={"chunk_id": str(i)}) for i, n in enumerate(lengths)]
    steps = embedding_steps(chunks, 128)
    assert sorted(c.metadata["chunk_id"] for step in steps for c in step) == sorted(str(i) for i in range(1000))
    assert [len(step) for step in steps].count(128) == 7  # 7 full steps and the rest
    spread = lambda step: max(len(c.page_content) for c in step) - min(len(c.page_content) for c in step)  # noqa: E731
    in_document_order = [chunks[b : b + 128] for b in range(0, 1000, 128)]
    assert max(map(spread, steps)) < min(map(spread, in_document_order)) / 5  # little padding per step
    # The work (characters) done after the first two steps is about the share of passages done, so the
    # rate so far predicts the rest (longest first would have done 1.7x the share of the work).
    work = sum(lengths)
    done_work = sum(len(c.page_content) for step in steps[:2] for c in step) / work
    done_passages = sum(len(step) for step in steps[:2]) / 1000
    assert abs(done_work / done_passages - 1) < 0.1


def test_an_index_is_queried_with_the_embedding_it_holds_and_rebuilt_when_the_default_changes(tmp_path,
                                                                                                monkeypatch):
    from knowledge_base.embeddings import MODEL_NAME, embedding_id
    from knowledge_base.vectorstore import open_serving

    guides = write_tiny_guides(tmp_path / "guides")
    settings = make_settings(tmp_path, GUIDES_DIR=guides)
    monkeypatch.setenv("EMBEDDING_PRECISION", "fp32")
    build(settings)
    assert open_serving(settings).embeddings.embedding_id == MODEL_NAME
    assert source_changes(settings) == []

    monkeypatch.setenv("EMBEDDING_PRECISION", "int8")  # the new default: the old version is not mixed with it
    assert open_serving(settings).embeddings.embedding_id == MODEL_NAME  # still queried in float32
    assert source_changes(settings) == ["embedding model"]
    build(settings)
    store = open_serving(settings)
    assert store.embeddings.embedding_id == embedding_id("int8")
    assert store._collection.metadata["embedding_model"] == embedding_id("int8")
    assert source_changes(settings) == []
