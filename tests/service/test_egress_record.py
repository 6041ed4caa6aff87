"""The egress rule travels with the work, on both backends: a job and a sweep keep the rule that
admitted them, the worker's claim hands it over (with the job's tenant), a sweep's retrain job
is admitted under the sweep's rule whatever the worker's settings say, and each webhook
delivery carries its job's rule to whichever process sends it. (The same on real processes, an
API with keys and workers without: tests/integration/test_egress_rule.py.)"""

from __future__ import annotations

import pytest

from service.contract.errors import SpecError
from service.contract.spec import JobSpec
from service.notify.webhooks import Webhooks
from service.settings import Settings
from service.store import Repository
from service.store.webhook_outbox import WebhookOutbox
from service.submission import jobs

LOOPBACK = {"dataset": {"name": "iris"}, "model": {"type": "mlp", "hidden": [4]},
            "notify": {"url": "http://127.0.0.1:9/internal-admin"}}  # fmt: skip
KEYED = Settings(api_keys="tenant-a:key-a")  # its own rule: deny
KEYLESS = Settings()  # its own rule: allow


def test_a_job_keeps_the_rule_it_was_admitted_under_and_its_claim_hands_it_over(store: Repository) -> None:
    spec = JobSpec.model_validate(LOOPBACK)
    with pytest.raises(SpecError) as refused:
        jobs.check_spec(spec, store, "tenant-a", KEYED)
    assert refused.value.loc == ("body", "notify", "url")
    # a keyless worker retraining a sweep admitted with keys: the sweep's rule, not its own
    with pytest.raises(SpecError):
        jobs.check_spec(spec, store, "tenant-a", KEYLESS, egress_private=False)
    checked = jobs.check_spec(spec, store, "tenant-a", KEYED, egress_private=True)
    assert checked.egress_private is True
    row = store.create_job(
        tenant="tenant-a", spec=checked.spec.model_dump(mode="json"), queue="cpu", egress_private=True
    )
    claim = store.claim(row["id"], "w1", 60, 3)
    assert claim is not None and (claim.tenant, claim.egress_private) == ("tenant-a", True)
    denied = store.create_job(tenant="tenant-b", spec={"name": "x"}, queue="cpu")  # the default: deny
    claim = store.claim(denied["id"], "w1", 60, 3)
    assert claim is not None and (claim.tenant, claim.egress_private) == ("tenant-b", False)


def test_a_sweep_keeps_its_rule_for_its_retrain_job(store: Repository) -> None:
    for rule in (True, False):
        sweep = store.create_sweep(tenant="t", spec={"x": 1}, queue="cpu", trials=[], egress_private=rule)
        claim = store.claim_sweep(sweep["id"], "w1", 60, 3)
        assert claim is not None and claim.egress_private is rule


class _Sender:
    def __init__(self, store: Repository) -> None:
        self.outbox = WebhookOutbox(store.engine)

    def wake(self) -> None:
        pass


def test_each_delivery_carries_its_jobs_rule(store: Repository) -> None:
    sender = _Sender(store)
    listener = Webhooks(store, sender)  # type: ignore[arg-type]
    for rule in (True, False):
        job = store.create_job(
            tenant="t", spec=JobSpec.model_validate(LOOPBACK).model_dump(mode="json"), queue="cpu",
            egress_private=rule,
        )  # fmt: skip
        claim = store.claim(job["id"], "w1", 60, 3)
        listener(job["id"], "claim", claim)
        store.finish(job["id"], "w1", "succeeded", result={})
        listener(job["id"], "finish", True)
        due = [d for d in sender.outbox.claim_due(10, 30) if d.job_id == job["id"]]
        assert due and all(d.allow_private is rule for d in due), due
