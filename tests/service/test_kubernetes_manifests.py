"""deploy/kubernetes (no cluster here): the base renders as kustomize renders it, every object
validates against the Kubernetes schemas (kubernetes-validate, offline; KEDA's objects against
the small schema beside this file, their CRDs being no core schema), and what the manifests say
agrees with the code: settings that exist, commands the CLI takes, probes on routes the app
serves, the image names of docker-compose.yml, the Redis list a queue's jobs wait in, the
grace period a worker's hand-back takes."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import redis
import yaml

from service.api.routes import health
from service.cli.main import GRACEFUL_SHUTDOWN_S, build_parser
from service.queue.broker import RUN_JOB_TASK, make_celery, queue_name
from service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "deploy" / "kubernetes" / "base"
KEDA_SCHEMA = json.loads((Path(__file__).parent / "keda_schema.json").read_text())
REDIS = os.environ.get("REGTRAIN_TEST_REDIS", "redis://127.0.0.1:6379")
UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "m": 1e-3, "": 1}


def render(folder: Path) -> list[dict[str, Any]]:
    """What `kustomize build` makes of a kustomization that lists only `resources` (files)."""
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    # Anything else (patches, labels, images) would need kustomize itself to render.
    assert set(kustomization) == {"apiVersion", "kind", "resources"}
    docs: list[dict[str, Any]] = []
    for name in kustomization["resources"]:
        docs += [d for d in yaml.safe_load_all((folder / name).read_text()) if d]
    return docs


def quantity(text: str | int) -> float:
    """A Kubernetes quantity ("10Gi", "500m", "2") as a number."""
    text = str(text)
    unit = next(u for u in UNITS if u and text.endswith(u)) if not text.isdigit() else ""
    return float(text.removesuffix(unit)) * UNITS[unit]


@pytest.fixture(scope="module")
def docs() -> list[dict[str, Any]]:
    return render(BASE)


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (doc,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def deployments(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    return c


def config(docs: list[dict[str, Any]]) -> dict[str, str]:
    return find(docs, "ConfigMap", "regtrain-config")["data"]


def test_the_base_names_the_fleet(docs: list[dict[str, Any]]) -> None:
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert kinds == {
        ("ConfigMap", "regtrain-config"),
        ("Deployment", "regtrain-api"),
        ("Service", "regtrain-api"),
        ("PodDisruptionBudget", "regtrain-api"),
        ("Deployment", "regtrain-worker-cpu"),
        ("Deployment", "regtrain-worker-gpu"),
        ("TriggerAuthentication", "regtrain-redis"),
        ("ScaledObject", "regtrain-worker-cpu"),
        ("ScaledObject", "regtrain-worker-gpu"),
    }
    # PostgreSQL, Redis and the bucket by reference: no credentials in the manifests.
    assert not [d for d in docs if d["kind"] == "Secret"]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="no kubectl (its kustomize) on PATH")
def test_kustomize_renders_what_the_test_renders(docs: list[dict[str, Any]]) -> None:
    out = subprocess.run(
        ["kubectl", "kustomize", str(BASE)], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    key = lambda d: (d["kind"], d["metadata"]["name"])  # noqa: E731
    assert sorted(yaml.safe_load_all(out), key=key) == sorted(docs, key=key)


def validate(doc: dict[str, Any]) -> None:
    if doc["apiVersion"].startswith("keda.sh/"):
        jsonschema.validate(doc, KEDA_SCHEMA)
    else:
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


def test_every_object_validates_against_its_schema(docs: list[dict[str, Any]]) -> None:
    for doc in docs:
        validate(doc)


def test_the_validation_refuses_a_misspelt_field(docs: list[dict[str, Any]]) -> None:
    """The schemas are strict: a typo is an error, not a field the cluster silently drops."""
    api = copy.deepcopy(find(docs, "Deployment", "regtrain-api"))
    container(api)["livenessprobe"] = container(api).pop("livenessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(api)
    scaled = copy.deepcopy(find(docs, "ScaledObject", "regtrain-worker-cpu"))
    scaled["spec"]["minReplicas"] = 1
    with pytest.raises(jsonschema.ValidationError):
        validate(scaled)


def test_every_setting_the_manifests_set_is_a_setting(docs: list[dict[str, Any]]) -> None:
    names = set(config(docs))
    for deployment in deployments(docs).values():
        names |= {e["name"] for e in container(deployment)["env"]}
        assert container(deployment)["envFrom"] == [{"configMapRef": {"name": "regtrain-config"}}]
    for name in names:
        if name.startswith("REGTRAIN_"):
            assert name.removeprefix("REGTRAIN_").lower() in Settings.model_fields, name
        else:
            assert name.startswith("AWS_") or name == "HOME", name
    # the values given in the clear are ones the settings accept
    settings = Settings(**{k.removeprefix("REGTRAIN_").lower(): v for k, v in config(docs).items()})
    assert str(settings.data_dir) == "/data"


def test_secrets_are_referenced_never_written(docs: list[dict[str, Any]]) -> None:
    required = {"REGTRAIN_DATABASE_URL", "REGTRAIN_BROKER_URL", "REGTRAIN_ARTIFACTS_URL"}
    for name, deployment in deployments(docs).items():
        env = {e["name"]: e for e in container(deployment)["env"]}
        for key, entry in env.items():
            if key == "HOME" or (key == "REGTRAIN_TORCH_THREADS" and "worker" in name):
                continue
            ref = entry["valueFrom"]["secretKeyRef"]
            assert ref["name"] == "regtrain" and ref["key"] == key, key
            assert ref.get("optional", False) == (key.startswith("AWS_") or key == "REGTRAIN_WEBHOOK_SECRETS")
        assert required <= set(env), name
        assert ("REGTRAIN_API_KEYS" in env) == (name == "regtrain-api")


def test_images_follow_the_compose_file(docs: list[dict[str, Any]]) -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    images = {name: container(d)["image"] for name, d in deployments(docs).items()}
    assert images["regtrain-api"] == images["regtrain-worker-cpu"] == compose["x-regtrain"]["image"]
    assert images["regtrain-worker-gpu"] == compose["services"]["worker-gpu"]["image"]


def test_commands_and_probes_exist(docs: list[dict[str, Any]]) -> None:
    parser = build_parser()  # the image's ENTRYPOINT is `regtrain`
    api = container(find(docs, "Deployment", "regtrain-api"))
    args = parser.parse_args(api["args"])
    assert args.command == "api" and args.host == "0.0.0.0"
    (port,) = api["ports"]
    assert port["containerPort"] == args.port
    routes = {r.path for r in health.router.routes}
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz" in routes
    assert api["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz" in routes
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert api[probe]["httpGet"]["port"] == port["name"]
    # SIGTERM gives requests in flight GRACEFUL_SHUTDOWN_S before the API exits: within the kill
    grace = find(docs, "Deployment", "regtrain-api")["spec"]["template"]["spec"][
        "terminationGracePeriodSeconds"
    ]
    assert grace > GRACEFUL_SHUTDOWN_S
    cpu = parser.parse_args(container(find(docs, "Deployment", "regtrain-worker-cpu"))["args"])
    gpu = parser.parse_args(container(find(docs, "Deployment", "regtrain-worker-gpu"))["args"])
    assert cpu.command == gpu.command == "worker"
    assert cpu.queues == ["cpu"] and gpu.gpu == 0 and gpu.queues is None  # --gpu: the gpu queue


def test_the_service_and_the_budget_select_the_api(docs: list[dict[str, Any]]) -> None:
    api = find(docs, "Deployment", "regtrain-api")
    labels = api["spec"]["template"]["metadata"]["labels"]
    service = find(docs, "Service", "regtrain-api")
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == container(api)["ports"][0]["name"]
    budget = find(docs, "PodDisruptionBudget", "regtrain-api")
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert budget["spec"]["minAvailable"] < api["spec"]["replicas"]
    # each Deployment's selector takes its own pods and no other's
    for name, d in deployments(docs).items():
        selector = d["spec"]["selector"]["matchLabels"].items()
        for other, o in deployments(docs).items():
            assert (selector <= o["spec"]["template"]["metadata"]["labels"].items()) == (other == name)


def test_pods_run_unprivileged_with_bounded_resources(docs: list[dict[str, Any]]) -> None:
    data_dir = config(docs)["REGTRAIN_DATA_DIR"]
    cache = int(config(docs)["REGTRAIN_CACHE_MAX_BYTES"])
    for name, d in deployments(docs).items():
        pod = d["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] == 1000  # the Dockerfile's user, owner of /data
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        c = container(d)
        assert c["securityContext"] == {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        }, name
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(c["resources"][kind]), name
        # A read-only root: the data dir and /tmp are emptyDirs, the cache fits its own.
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["mountPath"]: volumes[m["name"]] for m in c["volumeMounts"]}
        assert set(mounts) == {data_dir, "/tmp"}
        assert all("emptyDir" in v for v in mounts.values())
        assert quantity(mounts[data_dir]["emptyDir"]["sizeLimit"]) > cache


def test_workers(docs: list[dict[str, Any]]) -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    job_memory = int(config(docs)["REGTRAIN_MAX_WORKER_MEMORY_BYTES"])
    for kind in ("cpu", "gpu"):
        d = find(docs, "Deployment", f"regtrain-worker-{kind}")
        pod, c = d["spec"]["template"]["spec"], container(d)
        # SIGTERM hands the running job back (a warm shutdown): as long as compose gives it.
        grace = compose["services"][f"worker-{kind}"]["stop_grace_period"]
        assert pod["terminationGracePeriodSeconds"] == int(grace.removesuffix("s"))
        env = {e["name"]: e.get("value") for e in c["env"]}
        # torch computes on the CPUs the pod asked for, not every core of the node
        assert int(env["REGTRAIN_TORCH_THREADS"]) == quantity(c["resources"]["requests"]["cpu"]) >= 1
        # the biggest job the API admits fits the pod's memory
        assert quantity(c["resources"]["limits"]["memory"]) > job_memory
    gpu = find(docs, "Deployment", "regtrain-worker-gpu")
    resources = container(gpu)["resources"]
    assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"] == 1
    pod = gpu["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert "nvidia.com/gpu" not in str(find(docs, "Deployment", "regtrain-worker-cpu"))


def test_workers_scale_on_the_redis_list_their_queue_waits_in(docs: list[dict[str, Any]]) -> None:
    """The KEDA trigger's listName is the Redis key the broker pushes the queue's messages to:
    checked by sending one through the broker's own Celery app to a real Redis."""
    prefix = f"k8s{uuid.uuid4().hex[:8]}-"
    client = redis.Redis.from_url(f"{REDIS}/0")
    try:
        app = make_celery(Settings(broker_url=f"{REDIS}/0", queue_prefix=prefix))
        for kind in ("cpu", "gpu"):
            app.send_task(RUN_JOB_TASK, args=["a-job"], queue=queue_name(Settings(queue_prefix=prefix), kind))
            # the broker prefixes every key: the list of queue P+kind is P+P+kind
            assert client.llen(prefix + prefix + kind) == 1
    finally:
        for key in client.scan_iter(f"{prefix}*"):
            client.delete(key)
        client.close()
    ours = config(docs).get("REGTRAIN_QUEUE_PREFIX", "")
    auth = find(docs, "TriggerAuthentication", "regtrain-redis")
    assert {r["name"] for r in auth["spec"]["secretTargetRef"]} == {"regtrain"}
    for kind in ("cpu", "gpu"):
        scaled = find(docs, "ScaledObject", f"regtrain-worker-{kind}")
        assert scaled["spec"]["scaleTargetRef"]["name"] == f"regtrain-worker-{kind}"
        (trigger,) = scaled["spec"]["triggers"]
        assert trigger["type"] == "redis"
        assert trigger["metadata"]["listName"] == ours + ours + kind
        assert trigger["authenticationRef"]["name"] == "regtrain-redis"
        # every worker runs the reaper: never none
        assert scaled["spec"]["minReplicaCount"] >= 1
