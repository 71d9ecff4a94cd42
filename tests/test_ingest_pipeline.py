"""Versioned re-ingest against a real Chroma PersistentClient and the real MiniLM embeddings."""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bot.settings import Settings  # noqa: E402
from ingest import pipeline, store  # noqa: E402
from ingest.__main__ import main as cli_main  # noqa: E402
from ingest.testing import crash_embedding_on_batch, tiny_catalog, write_tiny_guides  # noqa: E402
from knowledge_base import vectorstore  # noqa: E402


@pytest.fixture()
def settings(tmp_path):
    return Settings().model_copy(
        update={"chroma_path": tmp_path / "chroma", "chroma_url": None, "guides_dir": tmp_path / "guides"}
    )


@pytest.fixture()
def guides(settings):
    return write_tiny_guides(settings.guides_dir)


def _ingest(settings, **kwargs):
    kwargs.setdefault("catalog", tiny_catalog())
    return pipeline.reingest(settings, **kwargs)


def test_the_embedding_model_is_made_ready_before_the_embed_stage_starts(settings, guides, monkeypatch):
    """On a fresh machine the model's one-time export happens in a stage of its own, so the embed stage's rate
    (and the time left shown from it) measures embedding alone."""
    import knowledge_base.embeddings as embeddings

    events = []
    real_load = embeddings.load_encoder

    def load_encoder(*args, **kwargs):
        events.append("load encoder")
        return real_load(*args, **kwargs)

    monkeypatch.setattr(embeddings, "load_encoder", load_encoder)
    report = _ingest(settings, progress=lambda done, total, stage: events.append((stage, done, total)))
    assert report.status == "built", report.error
    model_start, model_end = events.index(("model", 0, 1)), events.index(("model", 1, 1))
    embed_start = next(i for i, e in enumerate(events) if isinstance(e, tuple) and e[0] == "embed")
    assert model_start < events.index("load encoder") < model_end < embed_start
    assert "model" in report.timings and "embed" in report.timings


def test_reingest_builds_v1_then_v2_and_moves_alias(settings, guides):
    stages = []
    first = _ingest(settings, progress=lambda done, total, stage: stages.append((stage, done, total)))
    assert first.status == "built", first.error
    assert first.collection == "guides_v1" and first.previous is None
    assert {"load", "chunk", "embed", "check", "switch"} <= {s for s, _, _ in stages}
    assert first.chunks_per_source["atkinson_style.body.txt"] > 0 and first.chunks_per_source["catalog"] > 0
    assert 0 < first.species_tagged <= first.chunks

    info = store.serving_info(settings)
    assert info["available"] and info["version"] == 1 and info["count"] == first.chunks
    assert info["manifest"]["sources"]["notes.md"] == first.chunks_per_source["notes.md"]

    rows = store.all_chunks(settings)
    assert len(rows) == first.chunks
    assert {"id", "text", "metadata"} <= set(rows[0])
    assert any(r["metadata"]["species"] == "amanita_vaginata" and r["metadata"]["kind"] == "guide" for r in rows)

    hits = vectorstore.open_serving(settings).similarity_search("fly agaric red cap with white warts", k=3)
    assert "amanita_muscaria" in {d.metadata["species"] for d in hits}
    # a raw chroma query by text goes through our embedding function, never chroma's default model
    raw = store.get_collection(store.get_client(settings), "guides_v1").query(
        query_texts=["fly agaric red cap with white warts"], n_results=3, include=["metadatas"]
    )
    assert "amanita_muscaria" in {m["species"] for m in raw["metadatas"][0]}

    (guides / "notes.md").write_text("# More notes\n\n=Coprinus micaceus= Fr.--Glistening inkcap on stumps.\n")
    second = _ingest(settings)
    assert second.status == "built" and second.collection == "guides_v2" and second.previous == "guides_v1"
    # only the edited file's chunks were embedded again
    assert 0 < second.reused_embeddings < second.chunks
    assert second.chunks - second.reused_embeddings <= second.chunks_per_source["notes.md"]
    assert store.serving_collection_name(settings) == "guides_v2"
    assert store.list_versions(store.get_client(settings)) == ["guides_v1", "guides_v2"]
    texts = [r["text"] for r in store.all_chunks(settings)]
    assert any("Glistening inkcap" in t for t in texts)


def test_unchanged_content_is_not_rebuilt_and_force_keeps_two_versions(settings, guides):
    assert _ingest(settings).status == "built"
    again = _ingest(settings)
    assert again.status == "unchanged" and again.collection == "guides_v1"
    assert store.list_versions(store.get_client(settings)) == ["guides_v1"]

    assert _ingest(settings, force=True).collection == "guides_v2"
    third = _ingest(settings, force=True)
    assert third.collection == "guides_v3" and third.removed == ["guides_v1"]
    assert store.list_versions(store.get_client(settings)) == ["guides_v2", "guides_v3"]

    # a catalog edit is a change too
    catalog = tiny_catalog()
    catalog.profiles["amanita_vaginata"] = catalog.profiles["amanita_vaginata"].model_copy(
        update={"habitat": "birch woods"}
    )
    assert _ingest(settings, catalog=catalog).status == "built"


def test_embedding_failure_midway_leaves_v1_serving_and_no_half_collection(settings, guides, monkeypatch):
    assert _ingest(settings).status == "built"
    calls = crash_embedding_on_batch(monkeypatch, batch=3)  # two batches are written before the crash
    report = _ingest(settings, force=True)  # force: every batch is embedded afresh
    assert report.status == "failed" and "embedding backend crashed" in report.error
    assert calls["n"] == 3
    assert "still serving" in report.summary()
    client = store.get_client(settings)
    assert store.list_versions(client) == ["guides_v1"]
    assert store.serving_info(settings)["version"] == 1


def test_failed_check_leaves_v1_serving(settings, guides, monkeypatch):
    assert _ingest(settings).status == "built"

    def failing_check(*args, **kwargs):
        raise pipeline.IngestCheckFailed("smoke query returned the wrong species")

    monkeypatch.setattr(pipeline, "verify_collection", failing_check)
    report = _ingest(settings, force=True)
    assert report.status == "failed" and "wrong species" in report.error
    assert store.list_versions(store.get_client(settings)) == ["guides_v1"]
    assert store.serving_collection_name(settings) == "guides_v1"
    monkeypatch.undo()
    good = _ingest(settings, force=True)  # the failed build left no trace: the next run builds normally
    assert good.status == "built" and good.previous == "guides_v1"


def test_rollback_switches_back_and_forth(settings, guides):
    _ingest(settings)
    with pytest.raises(pipeline.RollbackError):
        pipeline.rollback(settings)
    _ingest(settings, force=True)
    info = pipeline.rollback(settings)
    assert info["collection"] == "guides_v1" and info["previous"] == "guides_v2"
    assert vectorstore.open_serving(settings)._collection.name == "guides_v1"
    assert pipeline.rollback(settings)["collection"] == "guides_v2"


def test_ensure_index_builds_once(settings, guides):
    assert store.serving_info(settings)["available"] is False
    with pytest.raises(store.NoIndexError):
        vectorstore.open_serving(settings)
    report = pipeline.ensure_index(settings, catalog=tiny_catalog())
    assert report is not None and report.ok
    assert pipeline.ensure_index(settings, catalog=tiny_catalog()) is None


def test_concurrent_reingest_is_refused(settings, guides):
    with pipeline.ingest_lock(settings):
        report = _ingest(settings)
    assert report.status == "busy" and not report.ok
    assert store.list_versions(store.get_client(settings)) == []


def test_missing_guides_dir_ingests_catalog_alone(settings):
    report = _ingest(settings)  # settings.guides_dir was never created
    assert report.status == "built"
    assert any("catalog alone" in w for w in report.warnings)
    assert set(report.chunks_per_source) == {"catalog"}


def test_cli_run_status_rollback(settings, guides, capsys):
    args = ["--chroma-path", str(settings.chroma_path)]
    assert cli_main(["status", *args]) == 1  # nothing yet
    assert cli_main(["run", "--source", str(guides), "--no-catalog", *args]) == 0
    assert "Built guides_v1" in capsys.readouterr().out
    assert cli_main(["run", "--source", str(guides), "--no-catalog", *args]) == 0
    assert "Nothing changed" in capsys.readouterr().out
    assert cli_main(["rollback", *args]) == 1
    assert cli_main(["status", *args]) == 0
    assert "guides_v1" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        cli_main(["--help"])
    assert exc.value.code == 0
