"""A job resumes from an epoch checkpoint the store lists, never from one a killed worker wrote
and did not record (the claim drops the metrics rows past the newest listed epoch)."""

from __future__ import annotations

from pathlib import Path

from service.settings import Settings
from service.store.artifacts import Artifacts
from worker import artifact_sync
from worker.training.checkpoints import epoch_checkpoints

SUFFIXES = (".safetensors", ".json", ".state.safetensors", ".state.json")


def _write(folder: Path, name: str) -> None:
    for suffix in SUFFIXES:
        (folder / f"{name}{suffix}").write_bytes(b"x")


def test_an_unrecorded_epoch_checkpoint_in_the_shared_folder_is_dropped(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    folder = settings.jobs_dir / "j1" / "checkpoints"
    folder.mkdir(parents=True)
    for name in ("epoch-2", "epoch-3", "epoch-4", "best"):
        _write(folder, name)
    listed = [{"name": "epoch-2", "epoch": 2}, {"name": "epoch-3", "epoch": 3}, {"name": "best", "epoch": 3}]
    assert artifact_sync.pull_resume(Artifacts(settings), "j1", listed) is None
    assert epoch_checkpoints(folder) == [2, 3]  # epoch 4 (its worker died before its row) is gone
    assert not any(folder.glob("epoch-4*")) and (folder / "best.safetensors").exists()
