"""docker-compose.yml and the Dockerfile (no Docker engine here): they parse, name the
services of the fleet, and run `regtrain` subcommands that exist."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.cli.main import build_parser
from service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_names_the_fleet(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"redis", "postgres", "minio", "minio-bucket", "api", "worker-cpu", "worker-gpu"} <= set(services)
    for name in ("redis", "postgres", "minio", "api"):
        assert services[name]["healthcheck"]["test"], name
    gpu = services["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["capabilities"] == ["gpu"] and gpu["driver"] == "nvidia"
    assert "8000:8000" in services["api"]["ports"]


def test_regtrain_services_share_no_file_system_only_the_store_broker_and_bucket(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    bucket_cmd = " ".join(services["minio-bucket"]["entrypoint"])
    volumes = []
    for name in ("api", "worker-cpu", "worker-gpu"):
        svc = services[name]
        env = svc["environment"]
        # a data dir of its own: scratch and cache
        assert env["REGTRAIN_DATA_DIR"] == "/data"
        (volume,) = svc["volumes"]
        assert volume.endswith(":/data") and volume.split(":")[0] in compose["volumes"], name
        volumes.append(volume.split(":")[0])
        assert env["REGTRAIN_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert env["REGTRAIN_BROKER_URL"].startswith("redis://redis:")
        # the bucket: the one the init service makes, on the minio service
        bucket = env["REGTRAIN_ARTIFACTS_URL"].removeprefix("s3://").split("/")[0]
        assert env["REGTRAIN_ARTIFACTS_URL"].startswith("s3://") and f"local/{bucket}" in bucket_cmd
        assert env["AWS_ENDPOINT_URL"] == "http://minio:9000"
        assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"} <= set(env)
        Settings(artifacts_url=env["REGTRAIN_ARTIFACTS_URL"])  # a URL the setting accepts
        assert svc["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert svc["depends_on"]["redis"]["condition"] == "service_healthy"
        assert svc["depends_on"]["minio-bucket"]["condition"] == "service_completed_successfully"
    assert len(set(volumes)) == 3  # no two regtrain containers share one
    assert services["minio-bucket"]["depends_on"]["minio"]["condition"] == "service_healthy"
    for key in services["api"]["environment"]:
        if key.startswith("REGTRAIN_"):
            assert key.removeprefix("REGTRAIN_").lower() in Settings.model_fields, key
        else:
            assert key.startswith("AWS_"), key


def test_compose_commands_are_regtrain_subcommands(compose: dict[str, Any]) -> None:
    parser = build_parser()  # the image's ENTRYPOINT is `regtrain`: commands are its arguments
    parsed = {
        name: parser.parse_args(compose["services"][name]["command"])
        for name in ("api", "worker-cpu", "worker-gpu")
    }
    assert parsed["api"].command == "api" and parsed["api"].host == "0.0.0.0"
    assert parsed["worker-cpu"].command == "worker" and parsed["worker-cpu"].queues == ["cpu"]
    assert parsed["worker-gpu"].command == "worker" and parsed["worker-gpu"].gpu == 0
    # The API listens beyond loopback, so it must be given keys.
    assert "REGTRAIN_API_KEYS" in compose["services"]["api"]["environment"]


def test_dockerfile_entrypoint_and_default_command() -> None:
    text = (ROOT / "Dockerfile").read_text()
    entry = json.loads(re.search(r"^ENTRYPOINT (.+)$", text, re.M).group(1))  # type: ignore[union-attr]
    cmd = json.loads(re.search(r"^CMD (.+)$", text, re.M).group(1))  # type: ignore[union-attr]
    assert entry == ["regtrain"]
    assert build_parser().parse_args(cmd).command == "api"
    assert "TORCH_INDEX_URL" in text and "download.pytorch.org/whl/cpu" in text


def test_readme_documents_every_setting_and_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    for name in Settings.model_fields:
        assert f"REGTRAIN_{name.upper()}" in readme, name
    assert "make up" in readme and "make test" in readme
    for block in re.findall(r"```(?:bash|sh)\n(.*?)```", readme, re.S):
        for line in block.splitlines():
            if line.startswith("regtrain "):
                words = [w for w in shlex.split(line, comments=True) if w != "&"]
                build_parser().parse_args(words[1:])
