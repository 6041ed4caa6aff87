"""The numbers that may differ between the trials of one stacked group: the trial axis's
registry (spec logic only, no torch).

Each entry is a field of the job spec that the stacked trainer holds as one (G,) tensor, a
number per trial (worker.training.stacked), and that the stacking rules let differ between the
trials of a group (service.contract.stacking: every other field must be equal). A new per-trial
number is added here once; the regularization terms and optimizer updates that read it are
worker.training.terms and worker.training.updates.
"""

from __future__ import annotations

from dataclasses import dataclass

from service.contract.spec import JobSpec


@dataclass(frozen=True)
class PerTrial:
    name: str  # the stacked trainer's tensor
    section: str  # where the spec keeps it
    field: str
    absent: float = 0.0  # its value where the section has no such field (a model type without dropout)

    def value(self, spec: JobSpec) -> float:
        return float(getattr(getattr(spec, self.section), self.field, self.absent))


PER_TRIAL = (
    PerTrial("l1", "regularization", "l1"),
    PerTrial("l2", "regularization", "l2"),
    PerTrial("smooth", "regularization", "label_smoothing"),
    PerTrial("base_lr", "optimizer", "lr"),
    PerTrial("wd", "optimizer", "weight_decay"),
    PerTrial("dropout", "model", "dropout"),
)

# The seed differs per trial too: it is each trial's initialization and shuffles, not a tensor.
SEED = ("training", "seed")

# What may differ between the trials of one group; everything else must be equal.
VARYING = (*((p.section, p.field) for p in PER_TRIAL), SEED)


def per_trial_values(spec: JobSpec) -> dict[str, float]:
    """A trial's numbers along the trial axis, by name."""
    return {p.name: p.value(spec) for p in PER_TRIAL}
