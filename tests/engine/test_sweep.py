"""The sweep engine: k-fold splits, scoring and the choice of the best trial, stacked trials
equal to the same trials trained alone, early stopping per trial, the warm-started
regularization path, cancellation, and which trials stack."""

from __future__ import annotations

import math
import statistics
from typing import Any

import numpy as np
import pytest
from engine_helpers import BASE, make_spec, merge, without_timing

from service.contract.architecture import BUILTIN_SHAPES
from service.contract.spec import JobSpec
from service.contract.sweep_spec import SweepSpec, Trial, expand
from service.data.datafile import ParsedDataset
from worker.training import sweep as sweep_module
from worker.training.data import Prepared, Standardization, cv_folds, load_dataset, split_and_standardize
from worker.training.errors import TrainingError
from worker.training.loop import Callbacks, fit
from worker.training.stacked import StackedTrainer, TrialResult
from worker.training.sweep import SweepCallbacks, SweepOutcome, TrialOutcome, run_sweep

TOL = 1e-4


def sweep_of(base: dict[str, Any] | None = None, **parts: Any) -> tuple[SweepSpec, list[Trial]]:
    """A SweepSpec over engine_helpers.BASE (with `base` merged in) and its trials."""
    s = SweepSpec.model_validate({"base": merge(BASE, base or {}), **parts})
    return s, expand(s, BUILTIN_SHAPES[s.base.dataset.name], 10_000_000)


def solo(spec: JobSpec, data: Prepared, **kw: Any) -> tuple[list[dict[str, Any]], Any]:
    """One trial trained alone with the loop: its metrics rows and the FitResult."""
    rows: list[dict[str, Any]] = []
    out = fit(spec, data, None, Callbacks(on_epoch=rows.append), **kw)
    return rows, out


def stacked(specs: list[JobSpec], data: Prepared) -> tuple[list[list[dict[str, Any]]], list[TrialResult]]:
    rows: list[list[dict[str, Any]]] = [[] for _ in specs]
    results = StackedTrainer(specs, data).fit(on_epoch=lambda g, row: rows[g].append(row))
    return rows, results


def assert_close_rows(a: list[dict[str, Any]], b: list[dict[str, Any]], keys: tuple[str, ...]) -> None:
    assert [r["epoch"] for r in a] == [r["epoch"] for r in b]
    for ra, rb in zip(a, b, strict=True):
        for k in keys:
            assert ra[k] == pytest.approx(rb[k], abs=TOL, rel=TOL), (ra["epoch"], k)


def all_folds(spec: JobSpec, k: int) -> list[Prepared]:
    raw = load_dataset(spec, None)
    return cv_folds(spec, raw, k) if k else [split_and_standardize(spec, raw)]


# --- k-fold cross validation ------------------------------------------------------------------


def id_dataset(task: str, n: int = 240) -> ParsedDataset:
    """Rows whose first feature is their own index, so that a split can be read back from the
    standardized arrays; imbalanced classes (50/30/20 %) to see the stratification."""
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], [n // 2, n * 3 // 10, n - n // 2 - n * 3 // 10])
    rng.shuffle(y)
    X = np.column_stack([np.arange(n), rng.normal(size=(n, 3)) + y[:, None]]).astype(np.float32)
    if task == "classification":
        return ParsedDataset(X, y.astype(np.int64), "classification", np.array(["a", "b", "c"]))
    target = (X[:, 1] * 3 + rng.normal(size=n)).astype(np.float32)
    return ParsedDataset(X, target, "regression", np.array([], dtype=str))


def row_ids(X: np.ndarray, st: Standardization) -> np.ndarray:
    return np.rint(X[:, 0] * st.std[0] + st.mean[0]).astype(int)


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_cv_folds_partition_the_non_test_rows(task: str) -> None:
    raw = id_dataset(task)
    n = len(raw.X)
    spec = make_spec(split={"validation": 0.2, "test": 0.2, "seed": 3})
    k = 5
    folds = cv_folds(spec, raw, k)
    assert len(folds) == k
    single = split_and_standardize(spec, raw)
    test_ids = row_ids(single.X_test, single.standardization)
    assert len(test_ids) == math.ceil(0.2 * n)
    rest = np.setdiff1d(np.arange(n), test_ids)

    seen_val: list[np.ndarray] = []
    for f in folds:
        st = f.standardization
        train, val, test = (row_ids(X, st) for X in (f.X_train, f.X_val, f.X_test))
        # the test rows are the single split's, in every fold
        np.testing.assert_array_equal(np.sort(test), np.sort(test_ids))
        # train and validation split the rest
        assert len(np.intersect1d(train, val)) == 0
        np.testing.assert_array_equal(np.sort(np.concatenate([train, val])), rest)
        assert abs(len(val) - len(rest) / k) <= 1
        # standardized on the fold's own train rows, and the labels are the rows' own
        np.testing.assert_allclose(st.mean, raw.X[train].mean(0), rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(st.std, raw.X[train].std(0), rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(f.X_train.mean(0), 0, atol=1e-4)
        np.testing.assert_allclose(f.X_train.std(0), 1, atol=1e-4)
        if task == "classification":
            np.testing.assert_array_equal(f.y_val, raw.y[val])
            np.testing.assert_array_equal(f.y_train, raw.y[train])
        else:
            assert st.target_mean == pytest.approx(float(raw.y[train].mean()), rel=1e-5)
            assert st.target_std == pytest.approx(float(raw.y[train].std()), rel=1e-5)
            np.testing.assert_allclose(
                f.y_val, (raw.y[val] - st.target_mean) / st.target_std, rtol=1e-5, atol=1e-5
            )
        seen_val.append(val)

    # the validation parts are disjoint and cover every non-test row once
    together = np.concatenate(seen_val)
    assert len(together) == len(rest)
    np.testing.assert_array_equal(np.sort(together), rest)
    # each fold's standardization is its own
    means = {tuple(np.round(f.standardization.mean, 6)) for f in folds}
    assert len(means) == k

    if task == "classification":
        total = np.bincount(raw.y[rest], minlength=3) / len(rest)
        for val in seen_val:
            share = np.bincount(raw.y[val], minlength=3) / len(val)
            np.testing.assert_allclose(share, total, atol=0.04)


def test_cv_folds_without_a_test_split_use_every_row() -> None:
    raw = id_dataset("classification", n=60)
    spec = make_spec(split={"validation": 0.0, "test": 0.0, "seed": 0})
    folds = cv_folds(spec, raw, 3)
    vals = [row_ids(f.X_val, f.standardization) for f in folds]
    np.testing.assert_array_equal(np.sort(np.concatenate(vals)), np.arange(60))
    assert all(len(f.X_test) == 0 for f in folds)


# --- scoring and the best trial ---------------------------------------------------------------


def check_scores(out: SweepOutcome, metric: str, k: int) -> list[float]:
    scores = []
    for t in out.trials:
        assert t.status == "succeeded", t.error
        assert len(t.fold_scores) == k
        assert t.score == pytest.approx(statistics.fmean(t.fold_scores), abs=1e-12)
        assert t.metrics[metric] == pytest.approx(t.score, abs=1e-12)
        assert t.metrics[f"{metric}_std"] == pytest.approx(statistics.pstdev(t.fold_scores), abs=1e-12)
        assert {"train_loss", "val_loss", "val_accuracy"} <= set(t.metrics)
        assert t.best_epoch is not None
        scores.append(t.score)
    return scores


@pytest.mark.parametrize("mode", ["min", "max"])
def test_best_index_is_the_arg_best_of_the_fold_means(mode: str) -> None:
    s, trials = sweep_of(
        grid={"optimizer.lr": [0.003, 0.03, 0.3], "regularization.l2": [0.0, 0.05]},
        cv_folds=3,
        objective={"metric": "val_loss", "mode": mode},
    )
    seen: list[TrialOutcome] = []
    out = run_sweep(s, trials, callbacks=SweepCallbacks(on_trial=seen.append))
    assert out.status == "succeeded"
    assert [t.index for t in out.trials] == list(range(6))
    assert [t.params for t in out.trials] == [t.params for t in trials]
    assert sorted(t.index for t in seen) == list(range(6))
    scores = check_scores(out, "val_loss", 3)
    assert len(set(scores)) == 6
    best = int(np.argmin(scores) if mode == "min" else np.argmax(scores))
    assert out.best_index == best
    # the folds are different data: a trial's scores differ from fold to fold
    assert all(len(set(t.fold_scores)) > 1 for t in out.trials)
    assert any(t.metrics["val_loss_std"] > 0 for t in out.trials)


def test_a_tie_goes_to_the_first_trial_and_accuracy_is_maximized() -> None:
    s, trials = sweep_of(
        grid={"optimizer.lr": [1e-4, 1e-4, 0.05, 0.05]},
        cv_folds=2,
        objective={"metric": "val_accuracy", "mode": "max"},
    )
    out = run_sweep(s, trials)
    scores = check_scores(out, "val_accuracy", 2)
    assert scores[2] == scores[3] and scores[2] > scores[0]
    assert out.best_index == 2


def test_a_diverged_trial_fails_and_cannot_win() -> None:
    s, trials = sweep_of(
        base={"training": {"epochs": 30}},
        grid={"regularization.l2": [0.0, 100.0]},  # each step multiplies the weights by 1 - 2·100·0.05
        objective={"metric": "val_loss", "mode": "max"},
    )
    for vectorize in ("auto", False):
        out = run_sweep(s.model_copy(update={"vectorize": vectorize}), trials)
        ok, bad = out.trials
        assert ok.status == "succeeded"
        assert bad.status == "failed"
        assert bad.error is not None and bad.error["type"] == "diverged"
        assert bad.score is None and bad.metrics == {}
        assert ok.vectorized == (vectorize == "auto")
        assert out.best_index == 0  # even though "max" would favour an exploding loss


# --- stacked trials equal the same trials trained alone ---------------------------------------

CLASSIFICATION_KEYS = ("train_loss", "data_loss", "penalty", "val_loss", "val_accuracy", "weight_l2_norm")


def _specs(common: dict[str, Any], varying: list[dict[str, Any]], dataset: str = "wine") -> list[JobSpec]:
    base = merge(
        BASE,
        {
            "dataset": {"name": dataset},
            "model": {"type": "mlp", "hidden": [16, 8]},
            "training": {"epochs": 3, "batch_size": 16, "seed": 0, "device": "cpu"},
        },
    )
    return [JobSpec.model_validate(merge(merge(base, common), v)) for v in varying]


def _varying(lrs: tuple[float, float]) -> list[dict[str, Any]]:
    """Trials that differ in every stackable field but dropout."""
    return [
        {},
        {"regularization": {"l1": 1e-3}},
        {"regularization": {"l2": 1e-2}},
        {"optimizer": {"weight_decay": 1e-2}},
        {"optimizer": {"lr": lrs[1]}},
        {"regularization": {"label_smoothing": 0.1}},
        {"training": {"seed": 3}},
        {"regularization": {"l1": 1e-4, "l2": 1e-3, "label_smoothing": 0.05}, "training": {"seed": 7}},
    ]


GROUPS = [
    pytest.param(
        {"optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9}}, _varying((0.05, 0.01)), id="sgd-momentum"
    ),
    pytest.param({"optimizer": {"name": "adam", "lr": 0.01}}, _varying((0.01, 0.003)), id="adam"),
    pytest.param(
        {"optimizer": {"name": "sgd", "lr": 0.05}},
        [{"optimizer": {"weight_decay": v}} for v in (0.0, 1e-2, 5e-2)],
        id="sgd-weight-decay-only",
    ),
    pytest.param({"optimizer": {"name": "adamw", "lr": 0.01}}, _varying((0.01, 0.003)), id="adamw"),
    pytest.param(
        {"optimizer": {"name": "sgd", "lr": 0.05}, "regularization": {"l1_mode": "proximal"}},
        [{"regularization": {"l1": v}} for v in (0.0, 1e-3, 1e-2, 5e-2)],
        id="proximal-l1",
    ),
    pytest.param(
        {"optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9}, "regularization": {"max_norm": 0.5}},
        [{"regularization": {"l2": v}} for v in (0.0, 1e-2)]
        + [{"optimizer": {"lr": 0.02}}, {"training": {"seed": 4}}],
        id="max-norm",
    ),
    pytest.param(
        {"optimizer": {"name": "adam", "lr": 0.01}, "regularization": {"l1_mode": "proximal"}},
        [{"regularization": {"l1": v}} for v in (0.0, 1e-3, 1e-2)],
        id="proximal-l1-adam",
    ),
    pytest.param(
        {"optimizer": {"name": "rmsprop", "lr": 0.003, "momentum": 0.5}},
        _varying((0.003, 0.001)),
        id="rmsprop-momentum",
    ),
    pytest.param(
        {
            "optimizer": {
                "name": "sgd",
                "lr": 0.05,
                "momentum": 0.9,
                "nesterov": True,
                "scheduler": {"type": "step", "step_size": 1, "gamma": 0.5},
            },
            "regularization": {"apply_to": "all"},
        },
        _varying((0.05, 0.01)),
        id="nesterov-step-scheduler-apply-to-all",
    ),
    pytest.param(
        {"optimizer": {"name": "adam", "lr": 0.01, "scheduler": {"type": "cosine"}}},
        _varying((0.01, 0.003)),
        id="adam-cosine",
    ),
]


@pytest.mark.parametrize(("common", "varying"), GROUPS)
def test_grouped_trials_equal_the_same_trials_alone(
    common: dict[str, Any], varying: list[dict[str, Any]], prepared: Any
) -> None:
    specs = _specs(common, varying)
    data = prepared(specs[0])
    rows, results = stacked(specs, data)
    for spec, trial_rows, res in zip(specs, rows, results, strict=True):
        solo_rows, out = solo(spec, data)
        assert_close_rows(trial_rows, solo_rows, CLASSIFICATION_KEYS)
        assert res.epochs_completed == out.epochs_completed == spec.training.epochs
        assert res.best_epoch == out.best_epoch
        assert set(res.test_metrics) == set(out.test_metrics) == {"test_loss", "test_accuracy"}
        for k, v in out.test_metrics.items():
            assert res.test_metrics[k] == pytest.approx(v, abs=TOL)
    # the trials really are different computations
    assert len({round(r[-1]["val_loss"], 6) for r in rows}) == len(specs)
    if specs[0].regularization.l1_mode == "proximal" and specs[0].optimizer.name == "sgd":
        # soft-thresholding gives exact zeros, growing with λ₁
        sparsity = [r[-1]["weight_sparsity"] for r in rows]
        assert sparsity[0] == 0 and sparsity[-1] > 0


def test_grouped_regression_trials_equal_the_same_trials_alone(prepared: Any) -> None:
    specs = _specs(
        {"optimizer": {"name": "sgd", "lr": 0.02, "momentum": 0.9}},
        [{}, {"regularization": {"l2": 1e-2}}, {"training": {"seed": 2}, "optimizer": {"lr": 0.01}}],
        dataset="diabetes",
    )
    data = prepared(specs[0])
    rows, results = stacked(specs, data)
    for spec, trial_rows, res in zip(specs, rows, results, strict=True):
        solo_rows, out = solo(spec, data)
        assert_close_rows(trial_rows, solo_rows, ("train_loss", "val_loss", "val_r2"))
        for a, b in zip(trial_rows, solo_rows, strict=True):
            assert a["val_mse"] == pytest.approx(b["val_mse"], rel=TOL)
            assert a["val_mae"] == pytest.approx(b["val_mae"], rel=TOL)
        for k, v in out.test_metrics.items():
            assert res.test_metrics[k] == pytest.approx(v, rel=TOL, abs=TOL)


def test_dropout_in_a_group_is_applied_per_trial(prepared: Any) -> None:
    """Dropout masks are not bit-matched to a solo run (documented); a trial with dropout
    trains differently from the same trial without, and a dropout-free neighbour is untouched."""
    specs = _specs(
        {"optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9}},
        [{"model": {"type": "mlp", "hidden": [16, 8], "dropout": p}} for p in (0.5, 0.0, 0.2)],
    )
    data = prepared(specs[0])
    rows, results = stacked(specs, data)
    for trial_rows, res in zip(rows, results, strict=True):
        assert len(trial_rows) == 3
        for row in trial_rows:
            assert all(math.isfinite(row[k]) for k in CLASSIFICATION_KEYS)
        assert all(math.isfinite(v) for v in res.test_metrics.values())
    assert rows[0][0]["train_loss"] != pytest.approx(rows[1][0]["train_loss"], abs=TOL)
    assert rows[0][-1]["val_loss"] != pytest.approx(rows[1][-1]["val_loss"], abs=TOL)
    solo_rows, out = solo(specs[1], data)
    assert_close_rows(rows[1], solo_rows, CLASSIFICATION_KEYS)
    assert results[1].test_metrics["test_loss"] == pytest.approx(out.test_metrics["test_loss"], abs=TOL)


# --- early stopping per trial -----------------------------------------------------------------


def _early_specs(restore_best: bool) -> list[JobSpec]:
    return [
        make_spec(
            optimizer={"name": "sgd", "lr": lr, "momentum": 0.9},
            training={
                "epochs": 25,
                "batch_size": 16,
                "seed": 0,
                "device": "cpu",
                "early_stopping": {"patience": 3, "restore_best": restore_best},
            },
        )
        for lr in (0.05, 0.01, 10.0, 0.3)
    ]


def test_early_stopping_and_restore_best_are_per_trial(prepared: Any) -> None:
    specs = _early_specs(restore_best=True)
    data = prepared(specs[0])
    rows, results = stacked(specs, data)
    fast, slow, huge, _ = results
    # the huge lr blows up and stops after patience; the slow trial trains to the end
    assert huge.stopped_early and huge.best_epoch == 1 and huge.epochs_completed == 4
    assert rows[2][-1]["val_loss"] > 1e3
    assert not slow.stopped_early and slow.epochs_completed == 25
    assert fast.stopped_early and 4 <= fast.epochs_completed < 25
    assert len({r.epochs_completed for r in results}) == len(results)
    assert [len(r) for r in rows] == [r.epochs_completed for r in results]
    restored = 0
    for spec, trial_rows, res in zip(specs, rows, results, strict=True):
        solo_rows, out = solo(spec, data)
        assert_close_rows(trial_rows, solo_rows, ("train_loss", "val_loss", "val_accuracy"))
        assert (res.best_epoch, res.epochs_completed, res.stopped_early) == (
            out.best_epoch,
            out.epochs_completed,
            out.stopped_early,
        )
        assert res.best_metrics["epoch"] == res.best_epoch
        assert res.last_metrics["epoch"] == res.epochs_completed
        # the test metrics are those of the trial's own best weights, as alone
        for k, v in out.test_metrics.items():
            assert res.test_metrics[k] == pytest.approx(v, rel=TOL, abs=TOL)
        restored += res.best_epoch != res.epochs_completed
    assert restored >= 2

    # without restore_best, the trials that stopped past their best keep their last weights,
    # and a trial that stopped does not move while the others train on
    no_restore = _early_specs(restore_best=False)
    _, last = stacked(no_restore, data)
    for spec, res, res_last in zip(no_restore, results, last, strict=True):
        assert res_last.epochs_completed == res.epochs_completed
        _, out = solo(spec, data)
        for k, v in out.test_metrics.items():
            assert res_last.test_metrics[k] == pytest.approx(v, rel=TOL, abs=TOL)
        if res.best_epoch != res.epochs_completed:
            assert res_last.test_metrics["test_loss"] != pytest.approx(
                res.test_metrics["test_loss"], abs=1e-6
            )
        else:
            assert res_last.test_metrics["test_loss"] == pytest.approx(
                res.test_metrics["test_loss"], abs=1e-6
            )


def test_a_sweep_scores_the_row_of_the_weights_it_keeps(prepared: Any) -> None:
    s, trials = sweep_of(
        base={"training": {"epochs": 25, "batch_size": 16, "early_stopping": {"patience": 3}}},
        grid={"optimizer.lr": [0.05, 0.3]},
    )
    out = run_sweep(s, trials)
    data = prepared(trials[0].spec)
    for t, o in zip(trials, out.trials, strict=True):
        assert o.vectorized
        rows, fo = solo(t.spec, data)
        best = rows[fo.best_epoch - 1]
        assert fo.best_epoch < fo.epochs_completed  # the best row is not the last one
        assert o.best_epoch == fo.best_epoch
        assert o.score == pytest.approx(best["val_loss"], abs=TOL)
        assert o.metrics["val_accuracy"] == pytest.approx(best["val_accuracy"], abs=TOL)


# --- the regularization path ------------------------------------------------------------------


@pytest.mark.parametrize("k", [0, 2])
def test_the_path_warm_starts_each_step_from_the_last(k: int) -> None:
    s, trials = sweep_of(
        base={"training": {"epochs": 3}},
        path={"regularization.l2": [0.05, 1e-4]},
        cv_folds=k,
    )
    out = run_sweep(s, trials)
    a, b = trials
    warm_scores, cold_scores, first_scores = [], [], []
    warm_rows: list[dict[str, Any]] = []
    for data in all_folds(a.spec, k):
        rows_a, out_a = solo(a.spec, data)
        weights = {name: v.detach().clone() for name, v in out_a.model.state_dict().items()}
        rows_b, _ = solo(b.spec, data, init_weights=weights)
        cold, _ = solo(b.spec, data)
        first_scores.append(rows_a[-1]["val_loss"])
        warm_scores.append(rows_b[-1]["val_loss"])
        cold_scores.append(cold[-1]["val_loss"])
        warm_rows.append(rows_b[-1])
    step_a, step_b = out.trials
    assert step_a.status == step_b.status == "succeeded"
    assert not step_a.vectorized and not step_b.vectorized
    assert step_a.fold_scores == first_scores
    assert step_b.fold_scores == warm_scores
    assert step_b.fold_scores != cold_scores
    assert all(abs(w - c) > 1e-6 for w, c in zip(warm_scores, cold_scores, strict=True))
    keys = [k2 for k2 in without_timing(warm_rows)[0] if k2 not in ("epoch",)]
    for key in keys:
        if warm_rows[0][key] is not None:
            assert step_b.metrics[key] == statistics.fmean(r[key] for r in warm_rows)


def test_a_diverged_path_step_fails_and_keeps_the_steps_before_it() -> None:
    """As in a grid, a trial that diverges is a failed trial, not a failed sweep: the steps
    already trained keep their scores."""
    s, trials = sweep_of(
        base={"training": {"epochs": 30}},
        path={"regularization.l2": [0.0, 100.0]},  # each step multiplies the weights by 1 - 2·100·0.05
    )
    out = run_sweep(s, trials)
    first, second = out.trials
    assert first.status == "succeeded" and first.score is not None
    assert second.status == "failed"
    assert second.error is not None and second.error["type"] == "diverged"
    assert out.best_index == 0


# --- cancellation -----------------------------------------------------------------------------


def test_cancel_after_the_first_trial_cancels_the_rest() -> None:
    s, trials = sweep_of(grid={"regularization.l2": [0.0, 1e-3, 1e-2]}, vectorize=False)
    stop = False
    seen: list[TrialOutcome] = []

    def on_trial(t: TrialOutcome) -> None:
        nonlocal stop
        seen.append(t)
        stop = True

    out = run_sweep(s, trials, callbacks=SweepCallbacks(on_trial=on_trial, should_stop=lambda: stop))
    assert out.status == "cancelled"
    assert [t.status for t in out.trials] == ["succeeded", "cancelled", "cancelled"]
    assert [t.index for t in seen] == [0]
    assert [t.params for t in out.trials] == [t.params for t in trials]
    assert out.best_index == 0


@pytest.mark.parametrize(
    "search",
    [
        {"grid": {"regularization.l2": [0.0, 1e-3, 1e-2]}},
        {"grid": {"regularization.l2": [0.0, 1e-3, 1e-2]}, "vectorize": False},
        {"grid": {"regularization.l2": [0.0, 1e-3]}, "cv_folds": 2},
        {"path": {"regularization.l2": [1e-2, 1e-3]}},
    ],
    ids=["stacked", "trial-by-trial", "folds", "path"],
)
def test_cancel_from_the_start_runs_nothing(search: dict[str, Any]) -> None:
    s, trials = sweep_of(**search)
    seen: list[TrialOutcome] = []
    out = run_sweep(s, trials, callbacks=SweepCallbacks(on_trial=seen.append, should_stop=lambda: True))
    assert out.status == "cancelled"
    assert [t.status for t in out.trials] == ["cancelled"] * len(trials)
    assert out.best_index is None
    assert seen == []


def test_cancel_between_the_folds_of_a_stacked_group() -> None:
    s, trials = sweep_of(grid={"regularization.l2": [0.0, 1e-3]}, cv_folds=3)
    calls = 0

    def should_stop() -> bool:
        nonlocal calls
        calls += 1
        return calls > 2  # after the first fold's training

    seen: list[TrialOutcome] = []
    out = run_sweep(s, trials, callbacks=SweepCallbacks(on_trial=seen.append, should_stop=should_stop))
    assert out.status == "cancelled"
    assert [t.status for t in out.trials] == ["cancelled", "cancelled"]
    assert seen == [] and out.best_index is None


# --- which trials stack -----------------------------------------------------------------------


def test_auto_stacks_and_false_trains_trial_by_trial_with_the_same_scores(prepared: Any) -> None:
    s, trials = sweep_of(
        grid={"regularization.l2": [0.0, 1e-2], "optimizer.lr": [0.02, 0.1]},
        cv_folds=2,
    )
    auto = run_sweep(s, trials)
    alone = run_sweep(s.model_copy(update={"vectorize": False}), trials)
    assert [t.vectorized for t in auto.trials] == [True] * 4
    assert [t.vectorized for t in alone.trials] == [False] * 4
    for a, b in zip(auto.trials, alone.trials, strict=True):
        assert a.status == b.status == "succeeded"
        assert a.fold_scores == pytest.approx(b.fold_scores, abs=TOL)
        assert a.best_epoch == b.best_epoch
    assert auto.best_index == alone.best_index
    # trial by trial is the loop itself, fold by fold
    folds = all_folds(trials[3].spec, 2)
    assert alone.trials[3].fold_scores == [solo(trials[3].spec, f)[0][-1]["val_loss"] for f in folds]


def test_auto_runs_a_cnn_trial_alone() -> None:
    mlp = {"type": "mlp", "hidden": [16]}
    s, trials = sweep_of(
        base={"dataset": {"name": "digits"}, "training": {"epochs": 1, "batch_size": 64}},
        grid={
            "model": [
                mlp,
                {**mlp, "dropout": 0.25},
                {"type": "cnn", "channels": [4], "hidden": [16]},
            ]
        },
    )
    out = run_sweep(s, trials)
    assert [t.status for t in out.trials] == ["succeeded"] * 3
    assert [t.vectorized for t in out.trials] == [True, True, False]
    cnn = trials[2].spec
    rows, _ = solo(cnn, split_and_standardize(cnn, load_dataset(cnn, None)))
    assert out.trials[2].score == rows[-1]["val_loss"]


def test_an_unstackable_trial_in_a_grid_trains_alone() -> None:
    s, trials = sweep_of(grid={"model.batch_norm": [False, True], "regularization.l2": [0.0, 1e-3]})
    out = run_sweep(s, trials)
    assert [t.status for t in out.trials] == ["succeeded"] * 4
    assert [t.vectorized for t in out.trials] == [True, True, False, False]


def test_groups_larger_than_the_device_allows_are_split(monkeypatch: pytest.MonkeyPatch) -> None:
    s, trials = sweep_of(grid={"regularization.l2": [0.0, 1e-3, 1e-2, 3e-2, 1e-1]})
    alone = run_sweep(s.model_copy(update={"vectorize": False}), trials)
    monkeypatch.setattr(sweep_module, "CPU_MAX_GROUP", 2)
    out = run_sweep(s, trials)
    # groups of 2, 2 and 1: a group of one trains alone
    assert [t.vectorized for t in out.trials] == [True, True, True, True, False]
    assert [t.index for t in out.trials] == list(range(5))
    for a, b in zip(out.trials, alone.trials, strict=True):
        assert a.params == b.params
        assert a.score == pytest.approx(b.score, abs=TOL)


def test_a_missing_dataset_is_a_typed_error() -> None:
    s = SweepSpec.model_validate(
        {"base": merge(BASE, {"dataset": {"id": "nope"}}), "grid": {"regularization.l2": [0.0]}}
    )
    trials = expand(s, None, 10_000_000)
    with pytest.raises(TrainingError) as e:
        run_sweep(s, trials)
    assert e.value.to_dict()["type"] == "bad_data"
