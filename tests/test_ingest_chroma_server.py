"""Versioned re-ingest against a real Chroma *server* (CHROMA_URL -> chromadb.HttpClient).

A `chroma run` subprocess is started on 127.0.0.1 (loopback only) with a free ephemeral port and a
tmp data dir, once for this module; each test starts from an empty server. Skips cleanly when the
`chroma` CLI is missing or the server does not come up.
"""

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from kb_support import one_torch_thread  # noqa: E402

from bot.settings import Settings  # noqa: E402
from ingest import pipeline, store  # noqa: E402
from ingest.testing import crash_embedding_on_batch, tiny_catalog, write_tiny_guides  # noqa: E402
from knowledge_base.answer import Answerer  # noqa: E402
from knowledge_base.catalog import default_catalog  # noqa: E402

HOST = "127.0.0.1"
STARTUP_TIMEOUT_S = 60.0


def _chroma_cli() -> str | None:
    # Prefer the CLI next to this interpreter (the venv's), else whatever is on PATH.
    beside = Path(sys.executable).with_name("chroma")
    return str(beside) if beside.exists() else shutil.which("chroma")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _heartbeat(port: int) -> bool:
    import chromadb

    try:
        chromadb.HttpClient(host=HOST, port=port,
                           settings=chromadb.Settings(anonymized_telemetry=False)).heartbeat()
        return True
    except Exception:
        return False


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def chroma_server(tmp_path_factory):
    """URL of a loopback `chroma run` server, terminated (killed if need be) at module end."""
    cli = _chroma_cli()
    if cli is None:
        pytest.skip("the `chroma` CLI is not installed")
    root = tmp_path_factory.mktemp("chroma_server")
    port = _free_port()
    log_path = root / "server.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            [cli, "run", "--path", str(root / "data"), "--host", HOST, "--port", str(port)],
            stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, "ANONYMIZED_TELEMETRY": "False"},
        )
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not _heartbeat(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace")[-500:]
                pytest.skip(f"chroma server did not come up on {HOST}:{port}: {tail!r}")
            time.sleep(0.25)
        yield f"http://{HOST}:{port}"
    finally:
        _stop(proc)


@pytest.fixture()
def settings(chroma_server, tmp_path, monkeypatch):
    """Settings read from the environment with CHROMA_URL set, on an emptied server."""
    monkeypatch.setenv("CHROMA_URL", chroma_server)
    # With CHROMA_URL the ingest lock file lives in var/; keep it in tmp so we never contend
    # with another engineer's real re-ingest.
    monkeypatch.setattr("bot.settings.DEFAULT_VAR_DIR", tmp_path / "var")
    settings = Settings(GUIDES_DIR=tmp_path / "guides", LLM_BASE_URL=None)
    assert settings.chroma_url == chroma_server
    client = store.get_client(settings)
    for name in [c if isinstance(c, str) else c.name for c in client.list_collections()]:
        client.delete_collection(name)
    return settings


@pytest.fixture()
def guides(settings):
    return write_tiny_guides(settings.guides_dir)


def _ingest(settings, **kwargs):
    kwargs.setdefault("catalog", tiny_catalog())
    with one_torch_thread():
        return pipeline.reingest(settings, **kwargs)


def _fresh_client(url: str):
    """A client that shares nothing with store's cache: what another process would see."""
    import chromadb

    parsed = urlparse(url)
    return chromadb.HttpClient(host=parsed.hostname, port=parsed.port,
                               settings=chromadb.Settings(anonymized_telemetry=False))


def test_client_is_http_on_loopback(settings):
    server = store.get_client(settings).get_settings()
    assert server.chroma_server_host == HOST and f":{server.chroma_server_http_port}" in settings.chroma_url
    assert store.get_client(settings).heartbeat() > 0
    assert store.describe_target(settings) == settings.chroma_url


def test_reingest_v1_v2_rollback_over_http(settings, guides):
    first = _ingest(settings)
    assert first.status == "built", first.error
    assert first.collection == "guides_v1" and first.chunks > 0

    fresh = _fresh_client(settings.chroma_url)
    alias = store.read_alias(fresh)
    assert alias.current == "guides_v1" and alias.last_version == 1
    assert fresh.get_collection("guides_v1").count() == first.chunks
    info = store.serving_info(settings)
    assert info["available"] and info["version"] == 1 and info["target"] == settings.chroma_url

    (guides / "notes.md").write_text("# More notes\n\n=Coprinus micaceus= Fr.--Glistening inkcap on stumps.\n")
    second = _ingest(settings)
    assert second.status == "built", second.error
    assert second.collection == "guides_v2" and second.previous == "guides_v1"
    assert 0 < second.reused_embeddings < second.chunks  # vectors read back over HTTP and reused
    alias = store.read_alias(_fresh_client(settings.chroma_url))
    assert (alias.current, alias.previous) == ("guides_v2", "guides_v1")
    assert any("Glistening inkcap" in r["text"] for r in store.all_chunks(settings))

    back = pipeline.rollback(settings)
    assert back["collection"] == "guides_v1" and back["previous"] == "guides_v2"
    assert store.read_alias(_fresh_client(settings.chroma_url)).current == "guides_v1"
    assert store.open_serving(settings)._collection.name == "guides_v1"
    assert not any("Glistening inkcap" in r["text"] for r in store.all_chunks(settings))


def test_answerer_from_settings_cites_the_guide_over_http(settings, guides):
    assert _ingest(settings).status == "built"
    answerer = Answerer.from_settings(settings)
    assert answerer.retriever is not None and len(answerer.retriever) > 0
    with one_torch_thread():
        answer = answerer.ask("Is Amanita muscaria edible?")
    assert answer.species == "amanita_muscaria"
    assert answer.verdict == default_catalog().edibility("amanita_muscaria")
    guide_files = {p.name for p in guides.iterdir()}
    guide_citations = [c for c in answer.citations if c.source in guide_files]
    assert any("white warts" in c.excerpt for c in guide_citations), answer.citations


def test_failure_midway_leaves_serving_version_and_no_half_collection(settings, guides, monkeypatch):
    assert _ingest(settings).status == "built"
    calls = crash_embedding_on_batch(monkeypatch, batch=3)  # two batches are written before the crash
    report = _ingest(settings, force=True)
    assert report.status == "failed" and "embedding backend crashed" in report.error
    assert calls["n"] == 3
    fresh = _fresh_client(settings.chroma_url)
    assert store.list_versions(fresh) == ["guides_v1"]  # guides_v2 was removed from the server
    assert store.read_alias(fresh).current == "guides_v1"
    assert store.serving_info(settings)["version"] == 1
