"""The documents of docs/API.md, rendered from the store's rows: a job (with its history), a
sweep (its trials, leaderboard, best, Pareto front, units and study). Pure functions of the rows:
the API's routes and streams and the webhooks' payloads render through them alike."""

from __future__ import annotations

from typing import Any

from service.contract import selection
from service.contract.search_space import study_name, study_storage
from service.contract.selection import Row


def job_document(job: Row, history: list[Row]) -> dict[str, Any]:
    """The job as docs/API.md spells it."""
    epochs = int(job["spec"].get("training", {}).get("epochs", 1))
    epoch = int(job["progress_epoch"] or 0)
    fraction = 1.0 if job["status"] == "succeeded" else min(epoch / epochs, 1.0)
    return {
        "id": job["id"],
        "name": job["name"],
        "status": job["status"],
        "created_at": job["created_at"],
        "started_at": job["started_at"],
        "finished_at": job["finished_at"],
        "attempts": job["attempts"],
        "cancel_requested": bool(job["cancel_requested"]),
        "history": [
            {k: h[k] for k in ("status", "at", "attempt", "worker", "resumed_from_epoch", "message")}
            for h in history
        ],
        "progress": {"epoch": epoch, "epochs": epochs, "fraction": round(fraction, 4)},
        "latest_metrics": job["latest_metrics"],
        "result": job["result"],
        "error": job["error"],
        "spec": job["spec"],
    }


def trial_document(t: Row) -> dict[str, Any]:
    return {
        "index": t["trial_index"],
        "params": t["params"],
        "status": t["status"],
        "metrics": t["metrics"],
        "score": t["score"],
        "fold_scores": t["fold_scores"],
        "vectorized": bool(t["vectorized"]),
        "error": t["error"],
        "epochs_trained": t["epochs_trained"],
        "pruned_at_epoch": t["pruned_at_epoch"],
        "reason": t["reason"],
        "progress": t["progress"],
        "curve": t["curve"] or [],
        "unit": t["unit"],
        "worker": t["worker"],
        "started_at": t["started_at"],
        "finished_at": t["finished_at"],
    }


def _best_known_at(sweep: Row, by_index: dict[int, Row], ranked: list[int]) -> Any:
    """When the best trial's score was first known: the best trial's (or, while the sweep runs,
    the leader's) finished_at, the moment its score was written. How long a search took to
    find its winner, beside how long it ran."""
    best = sweep["best_index"] if sweep["best_index"] is not None else (ranked[0] if ranked else None)
    row = by_index.get(best) if best is not None else None
    return row["finished_at"] if row is not None else None


def _scalars(metrics: dict[str, Any] | None) -> dict[str, Any] | None:
    if metrics is None:
        return None
    return {k: v for k, v in metrics.items() if not isinstance(v, dict | list)}


def _importances(found: dict[str, float] | None) -> dict[str, float] | None:
    """worker/importance.py's, once the search ended: most important first (PostgreSQL's jsonb
    keeps an object's keys in its own order)."""
    return None if found is None else dict(sorted(found.items(), key=lambda kv: -kv[1]))


def _units(sweep: Row, trials: list[Row], units: list[Row]) -> list[dict[str, Any]]:
    """The units of work, each with the worker that ran it (or runs it) and its attempts: the
    leased batches of a grid, random or search sweep, or a path's one chain on the sweep's
    worker."""
    if units:
        return [
            {
                "index": u["unit_index"],
                "status": u["status"],
                "worker": u["worker"],
                "attempts": u["attempts"],
                "trials": u["trials"],
                "folds": u.get("folds"),
            }
            for u in units
        ]
    if not trials:
        return []
    statuses = {t["status"] for t in trials}
    status = "running" if statuses & {"running", "queued"} else "succeeded"
    worker = next((t["worker"] for t in trials if t["worker"]), None) or sweep["lease_owner"]
    return [
        {
            "index": 0,
            "status": "queued" if statuses == {"queued"} else status,
            "worker": worker,
            "attempts": sweep["attempts"],
            "trials": [t["trial_index"] for t in trials],
        }
    ]


def sweep_document(
    sweep: Row,
    trials: list[Row],
    best_job: Row | None = None,
    storage_url: str | None = None,
    units: list[Row] | None = None,
) -> dict[str, Any]:
    """The sweep as docs/API.md spells it."""
    by_index = {t["trial_index"]: t for t in trials}
    best_row = by_index.get(sweep["best_index"]) if sweep["best_index"] is not None else None
    best = None
    if best_row is not None:
        result = (best_job or {}).get("result") or {}
        best = {
            "index": best_row["trial_index"],
            "params": best_row["params"],
            "metrics": best_row["metrics"],
            "score": best_row["score"],
            "score_std": (best_row["metrics"] or {}).get(
                f"{selection.primary(sweep['spec']).get('metric')}_std"
            ),
            "job_id": sweep["best_job_id"],
            "job_status": (best_job or {}).get("status"),
            # the scalars: the per-class report (a classification's per_class, confusion_matrix)
            # is on the job, and this field stays a flat map of numbers
            "test_metrics": _scalars(result.get("metrics")),
        }
    spec = sweep["spec"]
    ranked = selection.leaderboard(spec, trials)
    doc = {
        "id": sweep["id"],
        "name": sweep["name"],
        "status": sweep["status"],
        "created_at": sweep["created_at"],
        "started_at": sweep["started_at"],
        "finished_at": sweep["finished_at"],
        "attempts": sweep["attempts"],
        "cancel_requested": bool(sweep["cancel_requested"]),
        "trials": [trial_document(t) for t in trials],
        "leaderboard": ranked,
        "best": best,
        "best_known_at": _best_known_at(sweep, by_index, ranked),
        "objective": selection.primary(spec),
        "objectives": selection.objectives(spec),
        "pareto": selection.pareto(spec, trials) if len(selection.objectives(spec)) > 1 else None,
        "units": _units(sweep, trials, units or []),
        "warnings": sweep["warnings"] or [],
        "stopped_by": sweep.get("stopped_by"),  # the budget that ended the search, if one did
        "param_importances": _importances(sweep.get("param_importances")),
        "study": None,
        "spec": spec,
        "error": sweep["error"],
    }
    if spec.get("space") is not None and storage_url is not None:
        doc["study"] = {"name": study_name(sweep["id"]), "storage": study_storage(storage_url)}
    return doc
