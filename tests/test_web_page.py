"""The web page in a real browser: Playwright driving the OS's Chromium against the API served on
loopback (the real app, the real core; the bundled model and real photos when ../shared is here).

Skips with a reason where no Chromium is installed (`apt-get install chromium`) or Playwright is
missing. Screenshots go to the test's tmp folder; UPDATE_SCREENSHOTS=1 also writes docs/screenshots/.
"""

from __future__ import annotations

import io
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from api_support import free_port
from PIL import Image

playwright_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")

ROOT = Path(__file__).resolve().parent.parent
SHARED_IMAGES = Path(os.environ.get("SHARED_DATA", ROOT.parent / "shared" / "data")) / "images"
CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
if not CHROMIUM:
    pytest.skip("no Chromium on this machine (apt-get install chromium)", allow_module_level=True)
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                 "--disable-background-networking", "--disable-component-update"]


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    """A real photo of a death cap when the shared data is here, else one made here."""
    real = sorted(SHARED_IMAGES.glob("amanita_phalloides/*.jpg"))
    if real:
        return real[0]
    path = tmp_path_factory.mktemp("photo") / "mushroom.jpg"
    pixels = np.random.default_rng(5).integers(0, 255, (12, 16, 3), dtype=np.uint8)
    Image.fromarray(pixels).resize((320, 240)).save(path, "JPEG")
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import uvicorn

    from bot.api import create_app
    from config import Settings
    from knowledge_base.answer import Answerer
    from vision_model.classifier import Classifier
    from vision_model.testing import make_tiny_model_dir

    tmp = tmp_path_factory.mktemp("web")
    if SHARED_IMAGES.is_dir():
        classifier = Classifier.load()  # the bundled release, as the README's command serves it
    else:
        classifier = Classifier.load(make_tiny_model_dir(tmp / "model"), cache_dir=tmp / "onnx")
    settings = Settings(DATABASE_URL=f"sqlite:///{tmp / 'chat.sqlite3'}", CHROMA_PATH=str(tmp / "chroma"),
                        MAX_IMAGE_BYTES=10 * 2**20, LLM_BASE_URL=None)
    app = create_app(settings, classifier=classifier, answerer=Answerer(None))
    port = free_port()
    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not uv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert uv.started, "the API did not start"
    yield f"http://127.0.0.1:{port}"
    uv.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def open_page(browser, server, width: int):
    context = browser.new_context(viewport={"width": width, "height": 900 if width > 500 else 780})
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("dialog", lambda d: (problems.append(f"dialog: {d.message}"), d.dismiss()))
    page.goto(server + "/")
    return context, page, problems


def screenshot(page, tmp_path: Path, name: str) -> None:
    page.screenshot(path=str(tmp_path / name), full_page=True)
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        (ROOT / "docs" / "screenshots").mkdir(exist_ok=True)
        page.screenshot(path=str(ROOT / "docs" / "screenshots" / name), full_page=True)


@pytest.mark.parametrize("width", [360, 1280])
def test_photo_then_question(browser, server, photo, width, tmp_path):
    context, page, problems = open_page(browser, server, width)
    assert page.locator("#photos").get_attribute("capture") == "environment"
    page.set_input_files("#photos", str(photo))
    page.get_by_role("button", name="Identify").click()
    badge = page.locator(".badge").first
    badge.wait_for(timeout=60_000)
    assert badge.inner_text().strip()  # the verdict in words, not colour alone
    assert 1 <= page.locator(".guess progress").count() <= 3
    if SHARED_IMAGES.is_dir():  # the bundled model on a real death cap: the badge says so
        assert "DEADLY" in badge.inner_text() and page.locator(".guess").count() == 3
    page.get_by_role("button", name="Is it poisonous?").click()
    sources = page.locator("details.sources").last
    sources.wait_for(timeout=30_000)
    sources.locator("summary").click()
    assert "catalog" in sources.inner_text().lower()
    page.fill("#question", "symptoms?")
    page.keyboard.press("Enter")  # the keyboard alone works
    page.locator(".msg.bot").nth(3).wait_for(timeout=30_000)  # (no wait_for_function: the CSP forbids eval)
    screenshot(page, tmp_path, f"web-{width}.png")
    width_used = page.evaluate("document.documentElement.scrollWidth")
    assert width_used <= width, "the page scrolls sideways"
    assert not problems, problems
    context.close()


def test_bad_input_gets_a_clear_message_and_nothing_executes(browser, server, tmp_path):
    context, page, problems = open_page(browser, server, 360)
    fake = tmp_path / "holiday.jpg"
    fake.write_text("this is text, not a photo")
    page.set_input_files("#photos", str(fake))
    page.get_by_role("button", name="Identify").click()
    page.get_by_text("doesn't look like a photo I can read").wait_for(timeout=30_000)

    big = tmp_path / "huge.jpg"
    buf = io.BytesIO()
    Image.new("RGB", (64, 64)).save(buf, "JPEG")
    big.write_bytes(buf.getvalue() + os.urandom(20 * 2**20))  # 20 MB
    page.set_input_files("#photos", str(big))
    page.get_by_role("button", name="Identify").click()
    page.get_by_text("is too large (20.0 MB); the limit is 10.0 MB").wait_for(timeout=30_000)

    attack = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'
    page.fill("#question", attack)
    page.get_by_role("button", name="Ask").click()
    page.locator(".msg.bot").nth(3).wait_for(timeout=30_000)  # (no wait_for_function: the CSP forbids eval)
    assert page.get_by_text(attack).count() == 1  # shown as the text it is
    assert page.evaluate("window.__pwned") is None
    assert page.locator("#chat script, #chat img[src='x']").count() == 0
    screenshot(page, tmp_path, "web-bad-input.png")
    assert not problems, problems
    context.close()


def test_first_load_is_small_and_served_by_the_api_alone(browser, server):
    context = browser.new_context()
    page = context.new_page()
    sizes: dict[str, int] = {}
    page.on("response", lambda r: sizes.__setitem__(r.url, len(r.body())))
    response = page.goto(server + "/")
    page.wait_for_load_state("networkidle")
    assert all(url.startswith(server) for url in sizes), sizes  # no CDN, nothing from elsewhere
    assert sum(sizes.values()) < 200 * 1024, sizes
    assert "script-src 'self'" in response.headers["content-security-policy"]
    cookie = next(c for c in context.cookies() if c["name"] == "mushroom_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    context.close()
