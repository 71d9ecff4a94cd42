"""Schemathesis on the API's own OpenAPI schema, in process (ASGI): every operation, every check."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import schemathesis
from api_support import api_settings
from hypothesis import HealthCheck, settings

from bot.api import create_app

os.environ.setdefault("HF_HUB_OFFLINE", "1")
API_KEY = "schemathesis-key"


def build_app():
    from knowledge_base.answer import Answerer
    from vision_model.classifier import Classifier
    from vision_model.testing import make_tiny_model_dir

    tmp = Path(tempfile.mkdtemp(prefix="schemathesis-"))
    classifier = Classifier.load(make_tiny_model_dir(tmp / "model"), cache_dir=tmp / "onnx")
    return create_app(api_settings(tmp, API_KEY=API_KEY), classifier=classifier, answerer=Answerer(None))


schema = schemathesis.openapi.from_asgi("/openapi.json", build_app())


@schema.parametrize()
# derandomize: the same examples on every run, so CI is reproducible (vary --hypothesis-seed by hand).
@settings(max_examples=40, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
def test_every_operation_conforms_to_its_schema(case):
    # Every check, the authentication ones included: Schemathesis also sends the requests without
    # the key, and with a wrong one, and expects them refused.
    case.call_and_validate(headers={"X-API-Key": API_KEY})
