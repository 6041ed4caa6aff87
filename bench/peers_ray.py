"""Contestant: Ray Tune, ASHA + OptunaSearch, one trial per core (each trial asks for 1 CPU, so
as many run at once as this process has cores: os.sched_getaffinity, which taskset narrows),
Tune's defaults otherwise, over bench/peers_loop.py's hand-written loop inside a function
trainable; then the best trial that ran every epoch retrained on train + validation in the
driver and tested.

Ray is not a dependency of regtrain: `pip install -e '.[peers]'` (or `pip install "ray[tune]"`).
ray.init is timed apart (`notes.init_s`); the wall time starts when the Tuner is built.

Usage: python -m bench.peers_ray [--problem digits] [--trials 32] [--epochs 20]
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any

from bench import peers_data, peers_loop
from bench.peers_outcome import Outcome, contestant_main

# Tune's own names for the space (a dotted key would read as a nested path there)
SHORT = {
    "regularization.l1": "l1",
    "regularization.l2": "l2",
    "model.dropout": "dropout",
    "optimizer.lr": "lr",
}


def available() -> bool:
    try:
        import ray.tune  # noqa: F401
        from ray.tune.search.optuna import OptunaSearch  # noqa: F401
    except ImportError:
        return False
    return True


def _params(config: dict[str, Any]) -> peers_loop.Params:
    return peers_loop.Params.of({name: config[short] for name, short in SHORT.items()})


def _space() -> dict[str, Any]:
    from ray import tune

    make = {"log": tune.loguniform, "uniform": tune.uniform}
    return {SHORT[name]: make[scale](lo, hi) for name, (scale, lo, hi) in peers_loop.SPACE.items()}


def _trainable(config: dict[str, Any], data: peers_data.Split, epochs: int, hidden: int) -> None:
    from ray import tune

    def report(epoch: int, acc: float) -> bool:
        tune.report({"val_accuracy": acc, "at": time.time()})
        return True  # ASHA stops the trial from outside

    peers_loop.train(data, _params(config), epochs, hidden, report)


def _tuner(data: peers_data.Split, trials: int, epochs: int, hidden: int, storage: str) -> Any:
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    trainable = tune.with_resources(
        tune.with_parameters(_trainable, data=data, epochs=epochs, hidden=hidden), {"cpu": 1}
    )
    return tune.Tuner(
        trainable,
        param_space=_space(),
        tune_config=tune.TuneConfig(
            metric="val_accuracy",
            mode="max",
            search_alg=OptunaSearch(seed=0),
            scheduler=ASHAScheduler(max_t=epochs, grace_period=2, reduction_factor=3),
            num_samples=trials,
        ),
        run_config=tune.RunConfig(storage_path=storage, verbose=0),
    )


def run(problem: str, trials: int, epochs: int) -> Outcome:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no prompt, no phoning home
    import logging

    import ray

    p = peers_data.problem(problem)
    data = peers_data.split(p)
    t = time.perf_counter()
    ray.init(
        num_cpus=len(os.sched_getaffinity(0)),
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.WARNING,
    )
    init_s = time.perf_counter() - t
    try:
        with tempfile.TemporaryDirectory(prefix="bench-peers-ray-") as storage:
            t0, wall0 = time.perf_counter(), time.time()
            results = _tuner(data, trials, epochs, p.hidden, storage).fit()
            search_s = time.perf_counter() - t0
            rows = [r.metrics for r in results if r.error is None and r.metrics]
    finally:
        ray.shutdown()
    complete = [m for m in rows if m["training_iteration"] >= epochs]
    best = max(complete, key=lambda m: m["val_accuracy"])
    test = peers_loop.retrain_and_test(data, _params(best["config"]), epochs, p.hidden)
    return Outcome(
        contestant="ray tune",
        problem=problem,
        wall_s=time.perf_counter() - t0,
        best_at_s=float(best["at"]) - wall0,
        best_val=float(best["val_accuracy"]),
        test=test,
        trial_epochs=sum(int(m["training_iteration"]) for m in rows),
        trials=len(rows),
        pruned=len(rows) - len(complete),
        search_s=search_s,
        notes={"init_s": init_s},
    )


def main(argv: list[str] | None = None) -> Outcome:
    if not available():
        raise SystemExit("bench.peers_ray needs Ray Tune: pip install -e '.[peers]'")
    return contestant_main(run, __doc__, argv)


if __name__ == "__main__":
    main()
