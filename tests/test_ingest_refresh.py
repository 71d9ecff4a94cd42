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
