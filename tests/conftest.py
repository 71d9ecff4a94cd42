import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data beside the checkout; tests that need it skip cleanly where it is absent."""
    if not (SHARED_DATA / "images").is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (../shared is absent)")
    return SHARED_DATA
