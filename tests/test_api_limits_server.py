"""The API as a real server on loopback: a huge body without a key is refused at once, unread.

Starts `python -m bot api` with a tiny model and API_KEY set, then sends the headers of a 50 MB
JSON body to /v1/ask without a key over a raw socket: the 401 must come back before the body is
sent (under 100 ms) and the server's memory must not grow by the body's size.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from api_support import free_port, wait_until_serving

ROOT = Path(__file__).resolve().parent.parent
BODY_BYTES = 50 * 1024 * 1024


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not Path("/proc/self/status").exists():
        pytest.skip("needs /proc to read the server's memory")
    from vision_model.testing import make_tiny_model_dir

    tmp = tmp_path_factory.mktemp("api-server")
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "API_KEY": "server-test-key",
           "MODEL_DIR": str(make_tiny_model_dir(tmp / "model")), "CHROMA_PATH": str(tmp / "chroma"),
           "DATABASE_URL": f"sqlite:///{tmp / 'bot.sqlite3'}", "GUIDES_DIR": str(tmp / "guides"),
           "VISION_ONNX_CACHE": str(tmp / "onnx")}
    proc = subprocess.Popen([sys.executable, "-m", "bot", "api", "--port", str(port)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until_serving(f"http://127.0.0.1:{port}/healthz", proc, timeout=120)
    yield proc, port
    proc.terminate()
    proc.wait(timeout=20)


def send_headers_then_read(port: int, headers: str, first_chunk: bytes) -> tuple[bytes, float]:
    """Send the request line and headers plus one chunk of the body; the response and its delay."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        started = time.perf_counter()
        sock.sendall(headers.encode() + first_chunk)
        response = sock.recv(65536)
        seconds = time.perf_counter() - started  # to the first byte of the answer
        head, _, body = response.partition(b"\r\n\r\n")
        length = int(next((line.split(b":")[1] for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), b"0"))
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
        return head + b"\r\n\r\n" + body, seconds


def wait_for_the_model(port: int) -> None:
    """Measure on a settled server: the model loaded (the index never is here), its load not competing."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
        if ready.status_code == 200 or "model:" not in ready.json()["detail"]:
            break
        time.sleep(0.2)
    time.sleep(1.0)


def test_a_50_mb_body_without_a_key_is_refused_unread(server):
    proc, port = server
    wait_for_the_model(port)
    before = rss_bytes(proc.pid)
    headers = (f"POST /v1/ask HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
               f"Content-Length: {BODY_BYTES}\r\n\r\n")
    # The best of three: the property is "refused before the body is read"; a background thread of the
    # server (the loader retrying the missing index) can hold the GIL for a moment now and then.
    tries = [send_headers_then_read(port, headers, b'{"question": "' + b"x" * 65536) for _ in range(3)]
    response, seconds = tries[0][0], min(s for _, s in tries)
    after = rss_bytes(proc.pid)
    assert response.startswith(b"HTTP/1.1 401"), response[:200]
    assert b"API key" in response
    assert seconds < 0.1, seconds
    assert after - before < 50 * 1024 * 1024


def test_a_50_mb_question_with_the_key_is_refused_by_its_size(server):
    proc, port = server
    headers = (f"POST /v1/ask HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
               f"X-API-Key: server-test-key\r\nContent-Length: {BODY_BYTES}\r\n\r\n")
    tries = [send_headers_then_read(port, headers, b"{") for _ in range(3)]  # the best of three, as above
    response, seconds = tries[0][0], min(s for _, s in tries)
    assert response.startswith(b"HTTP/1.1 413"), response[:200]
    assert b"50.0 MB" in response and b"32.0 KB" in response  # the real size and the route's limit
    assert seconds < 0.1, seconds
