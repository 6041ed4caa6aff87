"""The example plugin as regtrain sees it once installed: a registered model type that the
spec validates, the planner counts exactly, the engine trains with its penalty over the
weight matrices, and TorchScript exports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import ValidationError
from regtrain_example_plugins.residual_mlp import ResidualMLPSpec

from service.contract.architecture import BUILTIN_SHAPES, parameter_count, plan_model
from service.contract.model_plugins import known_model_types
from service.contract.spec import JobSpec
from service.contract.stacking import not_stackable
from worker.training.data import prepare
from worker.training.loop import fit
from worker.training.models import create_model
from worker.training.regularization import split_parameters


def job(**model: Any) -> JobSpec:
    return JobSpec.model_validate(
        {
            "dataset": {"name": "iris"},
            "model": {"type": "residual_mlp", "width": 16, "blocks": 2, **model},
            "regularization": {"l2": 0.01},
            "optimizer": {"name": "adam", "lr": 0.01},
            "training": {"epochs": 30, "batch_size": 32, "seed": 0, "device": "cpu"},
        }
    )


def test_the_entry_point_registers_the_type() -> None:
    assert "residual_mlp" in known_model_types()
    spec = job(dropout=0.2)
    assert isinstance(spec.model, ResidualMLPSpec)
    assert spec.model_dump(mode="json")["model"]["width"] == 16
    with pytest.raises(ValidationError) as e:
        job(blocks=0)
    assert e.value.errors()[0]["loc"] == ("model", "blocks")
    assert "residual_mlp" in str(JobSpec.model_json_schema())


@pytest.mark.parametrize(
    ("width", "blocks", "dataset"), [(16, 1, "iris"), (8, 3, "digits"), (32, 2, "diabetes")]
)
def test_the_planner_counts_what_the_factory_builds(width: int, blocks: int, dataset: str) -> None:
    spec = job(width=width, blocks=blocks)
    shape = BUILTIN_SHAPES[dataset]
    model = create_model(spec, shape)
    assert sum(p.numel() for p in model.parameters()) == parameter_count(plan_model(spec, shape))


def test_it_trains_trial_by_trial_with_l2_over_its_weight_matrices(tmp_path: Path) -> None:
    spec = job()
    assert not_stackable(spec) == "residual_mlp models train trial by trial"
    model = create_model(spec, BUILTIN_SHAPES["iris"])
    in_scope, out_of_scope = split_parameters(model, "weights")
    assert {p.ndim for p in in_scope} == {2} and {p.ndim for p in out_of_scope} == {1}
    assert len(in_scope) == 2 + 2 * 2  # input, output, two per block
    result = fit(spec, prepare(spec), tmp_path)
    assert result.status == "succeeded"
    assert result.test_metrics["test_accuracy"] > 0.8  # iris is easy: far above 1/3


def test_torchscript_runs_as_the_module_does() -> None:
    spec = job(dropout=0.3)
    model = create_model(spec, BUILTIN_SHAPES["iris"]).eval()
    x = torch.randn(5, 4)
    scripted = torch.jit.trace(model, x)
    assert torch.allclose(scripted(x), model(x))
