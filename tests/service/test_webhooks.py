"""Webhooks: which targets a job's notify may call, and the spec's field."""

from __future__ import annotations

from fastapi.testclient import TestClient

from service.notify.webhooks import resolve_target

DIGITS_MLP = {
    "dataset": {"name": "digits"},
    "model": {"type": "mlp", "hidden": [8]},
    "training": {"epochs": 2},
}


def test_private_targets_are_refused_unless_allowed() -> None:
    for url in ("http://127.0.0.1:8000/hook", "http://localhost/x", "http://10.1.2.3/",
                "http://169.254.169.254/latest/meta-data", "http://[::1]:80/", "http://192.168.0.9/"):  # fmt: skip
        assert resolve_target(url, allow_private=False) is None, url
        assert resolve_target(url, allow_private=True) is not None, url
    assert resolve_target("https://93.184.216.34/hook", allow_private=False) == "93.184.216.34"
    assert resolve_target("http://no-such-host.invalid/", allow_private=False) is None


def test_notify_is_part_of_the_spec(client: TestClient) -> None:
    ok = client.post("/v1/jobs:validate", json={**DIGITS_MLP, "notify": {"url": "https://example.com/h"}})
    assert ok.status_code == 200 and ok.json()["spec"]["notify"] == {
        "url": "https://example.com/h", "events": ["done"]}  # fmt: skip
    for bad in ({"url": "ftp://example.com"}, {"url": "https://e.com", "events": ["epoch"]},
                {"url": "https://e.com", "events": []}):  # fmt: skip
        r = client.post("/v1/jobs", json={**DIGITS_MLP, "notify": bad})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"][:2] == ["body", "notify"], r.json()
