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
from knowledge_base import vectorstore  # noqa: E402
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
    # This process's lock file ("this container"); other processes get their own (other containers),
    # so only the lease in Chroma can keep two builders apart.
    monkeypatch.setenv("INGEST_LOCK_FILE", str(tmp_path / "this-container.lock"))
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
    assert vectorstore.open_serving(settings)._collection.name == "guides_v1"
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


# --- one builder across replicas: the lease in the index ------------------------------------------

def _slow_embedding(monkeypatch, seconds: float) -> None:
    from knowledge_base.embeddings import MiniLMEmbeddings

    monkeypatch.setattr(pipeline, "EMBED_BATCH", 2)
    real = MiniLMEmbeddings.embed_documents

    def slow(self, texts):
        time.sleep(seconds)
        return real(self, texts)

    monkeypatch.setattr(MiniLMEmbeddings, "embed_documents", slow)


def other_container_lock(settings) -> Path:
    return Path(settings.ingest_lock_file).with_name("other-container.lock")


def test_a_second_replica_is_refused_while_one_builds(settings, guides, monkeypatch):
    """A builds in this process; B, another process with its own lock file (a second container),
    starts 2 s later against the same server: B is refused with a clear message, A is untouched."""
    import json
    import threading

    assert _ingest(settings).status == "built"  # v1 serving
    _slow_embedding(monkeypatch, 1.0)  # about 14 s of building: B must start (and import) within it
    result = {}
    builder = threading.Thread(target=lambda: result.update(a=_ingest(settings, force=True)))
    builder.start()
    time.sleep(2.0)
    other = subprocess.run(
        [sys.executable, "-m", "ingest", "run", "--json", "--no-catalog", "--source", str(guides),
         "--chroma-url", settings.chroma_url],
        capture_output=True, text=True, timeout=240, cwd=Path(__file__).resolve().parent.parent,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "INGEST_LOCK_FILE": str(other_container_lock(settings))},
    )
    builder.join(timeout=240)
    report = json.loads(other.stdout)
    assert other.returncode == 1 and report["status"] == "busy", other.stdout + other.stderr
    assert "another re-ingest is running" in report["error"]
    assert result["a"].status == "built", result["a"].error
    fresh = _fresh_client(settings.chroma_url)
    assert store.read_alias(fresh).current == "guides_v2" == result["a"].collection
    assert fresh.get_collection("guides_v2").count() == result["a"].chunks  # nothing deleted under A
    assert store.lease_info(fresh) is None  # released


def test_two_builders_starting_together_get_one_lease(settings):
    import threading

    outcomes = []
    barrier = threading.Barrier(2)

    def take():
        lease = store.Lease(_fresh_client(settings.chroma_url), owner=f"owner-{threading.get_ident()}")
        barrier.wait()
        try:
            lease.acquire()
            outcomes.append("built")
        except store.LeaseHeld as exc:
            outcomes.append(f"busy: {exc}")

    threads = [threading.Thread(target=take) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(o.split(":")[0] for o in outcomes) == ["built", "busy"], outcomes


def test_a_killed_build_leaves_an_orphan_that_status_lists_and_gc_removes(settings, guides):
    """SIGKILL in the middle of an embedding: the serving version keeps serving, the lease lapses,
    `ingest status` lists the half-built version and `ingest gc` removes it."""
    import json
    import signal

    assert _ingest(settings).status == "built"
    script = (
        "import time, sys\n"
        "from ingest import pipeline, store\n"
        "from knowledge_base.embeddings import MiniLMEmbeddings\n"
        "store.LEASE_TTL_S = 3\n"
        "pipeline.EMBED_BATCH = 2\n"
        "real = MiniLMEmbeddings.embed_documents\n"
        "def slow(self, texts):\n"
        "    print('embedding', flush=True); time.sleep(1.0); return real(self, texts)\n"
        "MiniLMEmbeddings.embed_documents = slow\n"
        "from ingest.testing import tiny_catalog\n"
        f"pipeline.reingest(sources=[{str(guides)!r}], force=True, catalog=tiny_catalog())\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parent.parent,
                            env={**os.environ, "HF_HUB_OFFLINE": "1", "CHROMA_URL": settings.chroma_url,
                                 "INGEST_LOCK_FILE": str(other_container_lock(settings))})
    assert proc.stdout.readline().strip() == "embedding"
    time.sleep(1.5)  # a batch or two written into guides_v2
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    fresh = _fresh_client(settings.chroma_url)
    assert store.read_alias(fresh).current == "guides_v1"  # still serving
    assert "guides_v2" in store.list_versions(fresh)
    assert store.orphaned_builds(fresh) == []  # not while its lease is live: it may still be building
    time.sleep(3.5)  # the killed builder's lease lapses
    cli = [sys.executable, "-m", "ingest"]
    status = subprocess.run([*cli, "status", "--json", "--chroma-url", settings.chroma_url], capture_output=True,
                            text=True, timeout=120, cwd=Path(__file__).resolve().parent.parent)
    assert json.loads(status.stdout)["orphaned_builds"] == ["guides_v2"], status.stdout + status.stderr
    gc = subprocess.run([*cli, "gc", "--json", "--chroma-url", settings.chroma_url], capture_output=True,
                        text=True, timeout=120, cwd=Path(__file__).resolve().parent.parent)
    assert json.loads(gc.stdout) == {"removed": ["guides_v2"]}, gc.stdout + gc.stderr
    assert store.list_versions(_fresh_client(settings.chroma_url)) == ["guides_v1"]


# --- Chroma behind the Compose token proxy (docker/chroma-proxy) ----------------------------------

@pytest.fixture()
def token_proxy(chroma_server, tmp_path):
    """The Compose proxy's nginx template, rendered as its image would and run by a real nginx."""
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if nginx is None:
        pytest.skip("nginx is not installed")
    token, port = "proxy-test-token-0123456789", _free_port()
    template = (Path(__file__).resolve().parent.parent / "docker" / "chroma-proxy" / "default.conf.template")
    values = {"CHROMA_TOKEN": token, "CHROMA_PROXY_PORT": f"{HOST}:{port}",
              "CHROMA_UPSTREAM": urlparse(chroma_server).netloc}
    server = template.read_text()
    for name, value in values.items():  # envsubst of the CHROMA_ variables only, as NGINX_ENVSUBST_FILTER says
        server = server.replace("${" + name + "}", value)
    assert "${" not in server
    for folder in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (tmp_path / folder).mkdir()
    conf = tmp_path / "nginx.conf"
    # Started as root (CI), nginx would run its workers as "nobody", who cannot enter pytest's tmp dir.
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf.write_text(
        f"{user}worker_processes 1; daemon off; pid {tmp_path}/nginx.pid; error_log {tmp_path}/error.log;\n"
        "events {}\n"
        f"http {{ access_log off; client_body_temp_path {tmp_path}/body; proxy_temp_path {tmp_path}/proxy; "
        f"fastcgi_temp_path {tmp_path}/fastcgi; uwsgi_temp_path {tmp_path}/uwsgi; scgi_temp_path {tmp_path}/scgi;\n"
        f"{server}\n}}\n")
    proc = subprocess.Popen([nginx, "-c", str(conf), "-p", str(tmp_path)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex((HOST, port)) == 0:
                break
        time.sleep(0.1)
    else:
        _stop(proc)
        pytest.skip(f"nginx did not start: {(tmp_path / 'error.log').read_text(errors='replace')[-300:]}")
    yield f"http://{HOST}:{port}", token
    _stop(proc)


def test_the_token_proxy_admits_only_the_token(token_proxy, settings, guides, monkeypatch):
    import chromadb

    url, token = token_proxy
    parsed = urlparse(url)
    with pytest.raises(ValueError, match="CHROMA_TOKEN is required"):  # refused at the first request
        chromadb.HttpClient(host=parsed.hostname, port=parsed.port,
                            settings=chromadb.Settings(anonymized_telemetry=False)).list_collections()
    # The pipeline through the proxy, with the token from the settings (CHROMA_TOKEN).
    monkeypatch.setenv("CHROMA_URL", url)
    monkeypatch.setenv("CHROMA_TOKEN", token)
    through_proxy = Settings(GUIDES_DIR=settings.guides_dir, LLM_BASE_URL=None)
    report = _ingest(through_proxy)
    assert report.status == "built", report.error
    assert store.serving_info(through_proxy)["available"]
    assert store.read_alias(_fresh_client(settings.chroma_url)).current == report.collection  # it is the server
