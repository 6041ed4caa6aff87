"""What a tenant may say about MLflow: an experiment's and a model's name (checked by the JobSpec),
never a tracker's address; nothing at all on a server with no tracker (422, naming the field);
and on a server with API keys, names are the tenant's own in MLflow. The spec as params and the
metrics documents as MLflow metrics."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.notify.mlflow import MlflowSender, flat_params, numeric
from service.settings import Settings
from service.store import Repository

JOB: dict[str, Any] = {
    "dataset": {"name": "iris"},
    "model": {"type": "mlp", "hidden": [8]},
    "training": {"epochs": 1, "device": "cpu"},
}


def _tracking(**mlflow: Any) -> dict[str, Any]:
    return {**JOB, "tracking": {"mlflow": mlflow}}


@pytest.mark.parametrize(
    ("mlflow", "field"),
    [
        ({"uri": "http://169.254.169.254/"}, "uri"),  # a tracker's address is the operator's alone
        ({"tracking_uri": "http://10.0.0.1:5000"}, "tracking_uri"),
        ({"experiment": "../other-tenant"}, "experiment"),
        ({"experiment": "a/b"}, "experiment"),
        ({"experiment": "x'); drop"}, "experiment"),
        ({"experiment": "e" * 101}, "experiment"),
        ({"experiment": ""}, "experiment"),
        ({"register_as": "model\nname"}, "register_as"),
        ({"register_as": "name' or '1'='1"}, "register_as"),
    ],
)
def test_a_job_names_only_an_experiment_and_a_model_in_plain_characters(
    client: TestClient, mlflow: dict[str, Any], field: str
) -> None:
    r = client.post("/v1/jobs", json=_tracking(**mlflow))
    assert r.status_code == 422, r.text
    assert any(e["loc"][-1] == field and "tracking" in e["loc"] for e in r.json()["detail"]), r.text


def test_tracking_on_a_server_with_no_tracker_is_refused_naming_the_field(client: TestClient) -> None:
    r = client.post("/v1/jobs", json=_tracking(experiment="exp-1", register_as="model.v1"))
    assert r.status_code == 422, r.text
    assert [e["loc"] for e in r.json()["detail"]] == [["body", "tracking", "mlflow"]]
    assert "REGTRAIN_MLFLOW_TRACKING_URI" in r.json()["detail"][0]["msg"]
    sweep = {"base": _tracking(experiment="exp-1"), "grid": {"regularization.l2": [0.0, 0.1]}}
    r = client.post("/v1/sweeps", json=sweep)
    assert r.status_code == 422, r.text
    assert [e["loc"] for e in r.json()["detail"]] == [["body", "base", "tracking", "mlflow"]]
    assert client.post("/v1/jobs", json=JOB).status_code == 202  # no tracking: as ever


def test_the_tracker_setting_takes_only_an_http_address() -> None:
    for bad in ("file:///etc", "http://host/path with space", "mlflow"):
        with pytest.raises(ValueError):
            Settings(mlflow_tracking_uri=bad)


def test_with_api_keys_names_are_the_tenants_own(store: Repository, tmp_path: Any) -> None:
    spec = {"tracking": {"mlflow": {"experiment": "exp", "register_as": "model"}}}
    shared = MlflowSender(Settings(data_dir=tmp_path, mlflow_tracking_uri="http://127.0.0.1:9"), store)
    assert (shared.experiment(spec, "default"), shared.model_name(spec, "default")) == ("exp", "model")
    assert shared.experiment({}, "default") == "regtrain"
    keyed = Settings(
        data_dir=tmp_path, mlflow_tracking_uri="http://127.0.0.1:9", api_keys="team-a:k1,team-b:k2"
    )
    tenants = MlflowSender(keyed, store)
    assert (tenants.experiment(spec, "team-a"), tenants.model_name(spec, "team-a")) == (
        "team-a/exp",
        "team-a.model",
    )
    assert tenants.experiment({}, "team-b") == "team-b/regtrain"
    assert tenants.model_name({}, "team-b") is None


def test_a_spec_as_params_and_a_metrics_document_as_metrics() -> None:
    spec = {
        "name": "x",
        "model": {"type": "sequential", "layers": [{"type": "linear", "out_features": 8}, {"type": "relu"}]},
        "regularization": {"l2": 0.001, "max_norm": None},
        "optimizer": {"betas": [0.9, 0.999]},
        "notify": {"url": "https://hooks.example/t?token=secret"},
        "tracking": {"mlflow": {"experiment": "e"}},
    }
    assert flat_params(spec) == {
        "name": "x",
        "model.type": "sequential",
        "model.layers.0.type": "linear",
        "model.layers.0.out_features": "8",
        "model.layers.1.type": "relu",
        "regularization.l2": "0.001",
        "regularization.max_norm": "None",
        "optimizer.betas": "[0.9,0.999]",
    }
    doc = {
        "test_loss": 0.5,
        "per_class": {"a": {"f1": 1.0}},
        "confusion_matrix": [[1]],
        "flag": True,
        "nan": float("nan"),
    }
    assert numeric(doc) == {"test_loss": 0.5, "per_class.a.f1": 1.0}
    # a class label is any text; MLflow refuses a metric name outside [/\w.\- :] or one a path
    # would normalize ("a//b")
    labels = {"per_class": {"Adelie (Pygoscelis)": {"f1": 0.5}, "a//b c-d.é": {"f1": 0.25}}}
    assert numeric(labels) == {"per_class.Adelie _Pygoscelis_.f1": 0.5, "per_class.a__b c-d.é.f1": 0.25}
