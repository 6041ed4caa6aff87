"""bench/compiled_step.py: its hand-written gradients are autograd's, so that its "no autograd"
figure times the same step (the compiled way is left to the bench: it compiles for ~25 s)."""

from __future__ import annotations

import sys
from pathlib import Path

# bench/ is no installed package: it is read from the checkout, as `python -m bench.compiled_step` does
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench import compiled_step


def test_the_hand_written_step_matches_autograd_and_every_way_is_timed() -> None:
    out = compiled_step.run(steps=24, rounds=1, with_compile=False)
    assert out["grad_max_diff"] < 1e-6
    assert set(out["step_us"]) == {"eager", "no autograd"}
    assert all(us > 0 for us in out["step_us"].values())
    assert out["ratio_to_eager"]["eager"] == 1.0
