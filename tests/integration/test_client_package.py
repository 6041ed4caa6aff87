"""regtrain-client as a distribution of its own: installed into a fresh venv that has no torch,
it submits a job to the live server and follows it; and its models read what the live server's
/openapi.json says it answers, so the two cannot drift apart."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import regtrain_client
from live_service import Service
from regtrain_client import Client, Document

pytestmark = [pytest.mark.integration, pytest.mark.parametrize("service", ["embedded"], indirect=True)]

ROOT = Path(__file__).resolve().parents[2]
TINY = {"name": "venv-tiny", "dataset": {"name": "digits"}, "model": {"type": "mlp", "hidden": [16]},
        "training": {"epochs": 2, "batch_size": 64}}  # fmt: skip

FOLLOW = """
import json, sys
from regtrain_client import Client
client = Client(sys.argv[1])
job = client.submit(json.loads(sys.argv[2]))
done = job.wait(progress=True, timeout=120)
print(json.dumps({"id": job.id, "status": done.status, "epochs": [r.epoch for r in done.metrics()],
                  "test_accuracy": done.result.metrics["test_accuracy"]}))
"""


def test_a_fresh_venv_without_torch_submits_and_follows(service: Service, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    # As the README says: pip install ./clients/python (httpx and pydantic come from the index),
    # from a copy, so that pip's in-tree build leaves the checkout as it was.
    source = shutil.copytree(ROOT / "clients" / "python", tmp_path / "client",
                             ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))  # fmt: skip
    install = subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(source)],
                             capture_output=True, text=True, timeout=300)  # fmt: skip
    assert install.returncode == 0, install.stderr
    installed = subprocess.run([str(py), "-m", "pip", "list", "--format=json"], check=True,
                               capture_output=True, text=True).stdout  # fmt: skip
    names = {p["name"].lower() for p in json.loads(installed)}
    assert {"regtrain-client", "httpx", "pydantic"} <= names
    assert not names & {"torch", "celery", "sqlalchemy", "fastapi", "numpy", "regtrain"}
    no_torch = subprocess.run([str(py), "-c", "import torch"], capture_output=True, text=True)
    assert no_torch.returncode != 0 and "No module named 'torch'" in no_torch.stderr

    run = subprocess.run([str(py), "-c", FOLLOW, service.url, json.dumps(TINY)], cwd=tmp_path,
                         capture_output=True, text=True, timeout=180)  # fmt: skip
    assert run.returncode == 0, run.stderr
    doc = json.loads(run.stdout)
    assert doc["status"] == "succeeded" and doc["epochs"] == [1, 2] and 0 <= doc["test_accuracy"] <= 1
    # no tqdm in that venv: one plain progress line per epoch on stderr
    lines = [line for line in run.stderr.splitlines() if line.startswith("epoch")]
    assert [line.split()[1] for line in lines] == ["1/2", "2/2"]
    assert service.http.get(f"/v1/jobs/{doc['id']}").json()["name"] == "venv-tiny"


def _documents() -> list[type[Document]]:
    found = [getattr(regtrain_client.models, n) for n in dir(regtrain_client.models)]
    return [m for m in found if isinstance(m, type) and issubclass(m, Document) and m.SCHEMA]


def _types(schema: dict[str, Any], components: dict[str, Any]) -> set[str]:
    """The JSON types a (sub)schema admits, through $ref and anyOf."""
    if "$ref" in schema:
        return {"object"} if schema["$ref"].split("/")[-1] in components else {"?"}
    if "anyOf" in schema:
        return set().union(*(_types(s, components) for s in schema["anyOf"]))
    if "enum" in schema or "const" in schema:
        return {"string"}
    t = schema.get("type")
    if t is None:
        return {"any"}
    return {"number" if x == "integer" else x for x in ([t] if isinstance(t, str) else t)}


def test_the_client_models_match_the_servers_openapi(service: Service) -> None:
    components = service.http.get("/openapi.json").json()["components"]["schemas"]
    documents = _documents()
    assert {"Job", "Sweep", "SweepTrial", "Checkpoint", "HistoryEntry"} <= {m.SCHEMA for m in documents}
    for model in documents:
        server = components[model.SCHEMA]
        props, required = server["properties"], set(server.get("required", []))
        mine = model.model_json_schema(ref_template="#/components/schemas/{model}")
        mine_defs = mine.get("$defs", {})
        for name, field in model.model_fields.items():
            # every field the client reads is one the server documents...
            assert name in props, f"{model.__name__}.{name} is not in the server's {model.SCHEMA}"
            # ...of a type the server may send (the client may be wider, never narrower)...
            theirs = _types(props[name], components)
            ours = _types(mine["properties"][name], {**components, **mine_defs})
            assert "any" in ours or theirs <= ours, f"{model.__name__}.{name}: {theirs} vs {ours}"
            # ...and a field the client cannot do without is one the server always sends
            if field.is_required():
                assert name in required, f"{model.__name__}.{name} is optional on the server"
    # The metrics rows are free-form on the server (dict): check EpochMetrics against a real one.
    with Client(service.url) as client:
        job = client.submit(TINY).wait(timeout=120, check=True)
        row = service.http.get(f"/v1/jobs/{job.id}/metrics").json()["epochs"][0]
        missing = set(regtrain_client.EpochMetrics.model_fields) - set(row)
        assert not missing, f"EpochMetrics reads fields no metrics row has: {missing}"
        frame = job.metrics().to_dataframe()
        assert list(frame.index) == [1, 2]
        assert frame.loc[1, "train_loss"] == pytest.approx(row["train_loss"])
