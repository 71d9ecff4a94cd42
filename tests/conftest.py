import os
import tempfile
from pathlib import Path

import pytest
from hypothesis.configuration import set_hypothesis_home_dir

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("SHARED_DATA", ROOT.parent / "shared" / "data"))

# Tests write nothing inside the checkout: the state a run would leave under var/ goes to a scratch
# folder, and the ONNX export of the bundled model (slow to redo) to the user's cache, outside it.
_SCRATCH = Path(tempfile.mkdtemp(prefix="mushroom-tests-"))
_USER_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mushroom-bot-tests"
os.environ.setdefault("INGEST_LOCK_FILE", str(_SCRATCH / "ingest.lock"))
os.environ.setdefault("DATABASE_URL", f"sqlite:///{_SCRATCH / 'bot.sqlite3'}")
os.environ.setdefault("CHROMA_PATH", str(_SCRATCH / "chroma"))
os.environ.setdefault("DISCORD_HEALTH_FILE", str(_SCRATCH / "discord-alive"))
os.environ.setdefault("VISION_ONNX_CACHE", str(_USER_CACHE / "onnx"))
os.environ.setdefault("EMBEDDING_ONNX_CACHE", str(_USER_CACHE / "onnx"))
os.environ.setdefault("VISION_CACHE_DIR", str(_SCRATCH / "vision-cache"))
os.environ.setdefault("FEEDBACK_PHOTOS", str(_SCRATCH / "feedback-photos"))
# Training runs are tracked in MLflow by default; tests that check tracking switch it on themselves.
os.environ.setdefault("VISION_TRACKING", "off")
os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{_SCRATCH / 'mlflow' / 'mlflow.db'}")
# Hypothesis (and Schemathesis on top of it) keeps its files in .hypothesis/ of the working folder.
set_hypothesis_home_dir(str(_SCRATCH / "hypothesis"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data beside the checkout; tests that need it skip cleanly where it is absent."""
    if not (SHARED_DATA / "images").is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (../shared is absent)")
    return SHARED_DATA


def pytest_sessionfinish(session, exitstatus):
    import shutil

    shutil.rmtree(_SCRATCH, ignore_errors=True)
