"""Contestant: a plain in-process Optuna script, one process. TPE (seed 0, Optuna's defaults
otherwise) + SuccessiveHalvingPruner (min resource 2 epochs, reduction factor 3) over
bench/peers_loop.py's hand-written loop, objective the last epoch's validation accuracy; then
the best trial retrained on train + validation and tested.

Usage: python -m bench.peers_optuna [--problem digits] [--trials 32] [--epochs 20]
(prints the Outcome as JSON on its last line)
"""

from __future__ import annotations

import time

from bench import peers_data, peers_loop
from bench.peers_outcome import Outcome, contestant_main


def _suggest(trial: object) -> peers_loop.Params:
    import optuna

    assert isinstance(trial, optuna.Trial)
    values = {
        name: trial.suggest_float(name, lo, hi, log=scale == "log")
        for name, (scale, lo, hi) in peers_loop.SPACE.items()
    }
    return peers_loop.Params.of(values)


def run(problem: str, trials: int, epochs: int) -> Outcome:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    p = peers_data.problem(problem)
    data = peers_data.split(p)
    t0 = time.perf_counter()
    finished_at: dict[int, float] = {}
    epochs_of: dict[int, int] = {}

    def objective(trial: optuna.Trial) -> float:
        def report(epoch: int, acc: float) -> bool:
            trial.report(acc, epoch)
            return not trial.should_prune()

        score, trained = peers_loop.train(data, _suggest(trial), epochs, p.hidden, report)
        epochs_of[trial.number] = trained
        finished_at[trial.number] = time.perf_counter() - t0
        if trained < epochs:
            raise optuna.TrialPruned()
        return score

    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=0),
        pruner=optuna.pruners.SuccessiveHalvingPruner(min_resource=2, reduction_factor=3),
    )
    study.optimize(objective, n_trials=trials)
    search_s = time.perf_counter() - t0
    best = study.best_trial
    test = peers_loop.retrain_and_test(data, peers_loop.Params.of(best.params), epochs, p.hidden)
    return Outcome(
        contestant="optuna script",
        problem=problem,
        wall_s=time.perf_counter() - t0,
        best_at_s=finished_at[best.number],
        best_val=float(best.value or 0.0),
        test=test,
        trial_epochs=sum(epochs_of.values()),
        trials=len(study.trials),
        pruned=sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials),
        search_s=search_s,
    )


def main(argv: list[str] | None = None) -> Outcome:
    return contestant_main(run, __doc__, argv)


if __name__ == "__main__":
    main()
