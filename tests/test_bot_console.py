"""`python -m bot console` as a subprocess with piped stdin, over the tiny model."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from bot_support import jpeg, tiny_model

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def deadly_model(tmp_path_factory):
    """The tiny model with its ONNX graph shipped inside, so the console process never imports torch."""
    from vision_model.classifier import Classifier

    root = tmp_path_factory.mktemp("console-models")
    model = tiny_model(str(root), "amanita_phalloides")
    exported = Classifier.load(model, backend="onnx", cache_dir=root / "onnx-cache")._runner.path
    shutil.copy(exported, model / "model.onnx")
    return model


def run_console(tmp_path: Path, model: Path, stdin: str, *extra: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'bot.sqlite3'}",
        "CHROMA_PATH": str(tmp_path / "chroma"),
        "GUIDES_DIR": str(tmp_path / "guides"),
        "VISION_BACKEND": "onnx",
    }
    return subprocess.run(
        [sys.executable, "-m", "bot", "console", "--model", str(model), *extra],
        input=stdin, capture_output=True, text=True, cwd=ROOT, env=env, timeout=240,
    )


def test_console_session_with_piped_stdin(tmp_path, deadly_model):
    cap, gills = tmp_path / "cap.jpg", tmp_path / "gills space.jpg"
    cap.write_bytes(jpeg((200, 200, 180)))
    gills.write_bytes(jpeg((240, 240, 240)))
    (tmp_path / "notes.txt").write_text("not a photo")
    script = "\n".join([
        f'/identify {cap} "{gills}"',
        "is it poisonous?",
        "/more",
        "i ate some an hour ago and feel sick",
        "kann ich den essen?",
        "/lookalikes",
        f"/identify {tmp_path / 'notes.txt'}",
        f"/identify {tmp_path / 'missing.jpg'}",
        "/frobnicate",
        "/ask",
        "/status",
        "/quit",
        "/about",
        "",
    ])
    result = run_console(tmp_path, deadly_model, script, "--no-build-index")
    out = result.stdout
    assert result.returncode == 0, result.stderr
    assert "2 photos, one observation" in out and "DEADLY - can kill" in out
    assert "[buttons: More | Is it poisonous? | Lookalikes | Sources | Right | Wrong | Not sure]" in out
    # The follow-up resolved to the photo; /more gave the rest of that answer.
    assert "Amanita phalloides (death cap) is DEADLY poisonous" in out and "Sources:\n• Species catalog" in out
    # A poisoning after the photo: first aid first, then the species' facts.
    poisoning = out[out.index("⚠️ Possible poisoning"):]
    assert poisoning.index("call a poison centre") < 100 and "Amanita phalloides" in poisoning[:600]
    assert "Nein - nicht essen." in out  # the same photo, asked in German
    assert "Lookalikes of Amanita phalloides" in out
    assert "doesn't look like a photo" in out
    assert "couldn't find the photo" in out and "missing.jpg" in out
    assert "I don't know the command /frobnicate" in out
    assert "What would you like to know?" in out
    assert "Model: tiny-test" in out  # the console user is the local operator (admin)
    assert "**" not in out  # markup rendered as plain text
    assert "About this bot" not in out  # stopped at /quit


    # A second run starts a new conversation (the same local user); --continue goes on with the
    # last one, whose photo is remembered across the restart.
    fresh = run_console(tmp_path, deadly_model, "what about the first one?\n", "--no-build-index", "--continue")
    assert fresh.returncode == 0, fresh.stderr
    assert "Amanita phalloides" in fresh.stdout.split("\n")[0]
    new = run_console(tmp_path, deadly_model, "what about the first one?\n", "--no-build-index")
    assert new.returncode == 0, new.stderr
    assert "haven't seen a photo" in new.stdout


def test_feedback_in_the_console(tmp_path, deadly_model):
    """The console has no buttons to press: /correct gives the same feedback (issue 27)."""
    from sqlalchemy import create_engine, text

    cap = tmp_path / "cap.jpg"
    cap.write_bytes(jpeg((200, 200, 180)))
    script = f"/identify {cap}\n/correct death cap\n/correct Boletus imaginarius\n/consent maybe\n/consent\n"
    result = run_console(tmp_path, deadly_model, script, "--no-build-index")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "[buttons: More | Is it poisonous? | Lookalikes | Sources | Right | Wrong | Not sure]" in out
    assert "noted that your photo shows Amanita phalloides" in out and "/consent on" in out
    assert "I don't know a species called \"Boletus imaginarius\"" in out
    assert "Say /consent on to let me keep your photos" in out and "Keeping your photos: off" in out
    db = create_engine(f"sqlite:///{tmp_path / 'bot.sqlite3'}")
    with db.connect() as conn:
        [vote] = conn.execute(text("SELECT vote, user_label, model_version FROM bot_feedback")).mappings().all()
    assert vote["vote"] == "right" and vote["user_label"] == "amanita_phalloides" and vote["model_version"]

    forgot = run_console(tmp_path, deadly_model, "/forget\n", "--no-build-index", "--continue")
    assert "your 1 feedback answer(s) and 0 kept photo(s)" in forgot.stdout
    with db.connect() as conn:
        for table in ("bot_feedback", "bot_consent", "bot_identifications", "bot_history"):
            assert conn.execute(text(f"SELECT count(*) FROM {table}")).scalar() == 0, table
