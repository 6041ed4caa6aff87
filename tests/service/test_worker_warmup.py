"""A worker warms up before it says ready (worker/warmup.py, worker/celery_app.py): the engine's
first steps run once, in-process, unless REGTRAIN_WORKER_WARMUP says not to."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_warm_up_trains_a_stacked_and_a_solo_step_on_synthetic_data() -> None:
    from worker.warmup import warm_up

    imports, steps = warm_up()
    assert imports >= 0 and steps > 0


@pytest.mark.parametrize("enabled", [True, False])
def test_the_worker_warms_up_only_when_the_setting_says_so(
    enabled: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import worker.celery_app as celery_app
    import worker.warmup as warmup
    from service.settings import Settings

    calls: list[str] = []
    monkeypatch.setattr(
        celery_app, "get_settings", lambda: Settings(data_dir=tmp_path, worker_warmup=enabled)
    )
    monkeypatch.setattr(warmup, "warm_up", lambda: calls.append("warm") or (0.0, 0.0))
    monkeypatch.setattr("worker.search.storage", lambda url: calls.append(url))
    monkeypatch.setattr(celery_app, "_warmed", [])
    monkeypatch.setattr(celery_app.gc, "freeze", lambda: calls.append("freeze"))  # not this process's
    celery_app._warm_up()
    assert calls == (["warm", f"sqlite:///{tmp_path / 'regtrain.db'}", "freeze"] if enabled else [])
    assert celery_app._warmed == (
        ["worker warmed up before it said ready: imports 0.00s, first steps 0.00s"] if enabled else []
    )
