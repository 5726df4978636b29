"""Resuming from any epoch's checkpoint, before or after any phase change and mid warm-up, ends bitwise identical to
the uninterrupted run, for every schedule form."""

import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from tests.callbacks._helpers import loaders, max_difference, model, trainer
from tlkit.callbacks import LRWarmup, ProgressiveUnfreezing

SCHEDULES = {
    "gradual": dict(every_n_epochs=2, groups_per_step=2),
    "milestones": dict(milestones={1: ["layer4.0"], 3: [r"layer2\.0\.conv", "layer3.0"], 4: "all"}),
    "plateau": dict(monitor="val/loss", patience=1, max_epochs_per_phase=2),
}
EPOCHS = 6


def callbacks():
    # 4 steps per epoch: the 10-step warm-up of each newly unfrozen group spans checkpoints.
    return [LRWarmup(duration=10, shape="cosine")]


@pytest.mark.parametrize("schedule", SCHEDULES, ids=list(SCHEDULES))
def test_resume_is_bitwise_identical(tmp_path, schedule):
    # Random augmentation and an MLP head with dropout: randomness must resume too.
    train, val = loaders(augment=True)
    every_epoch = ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="{epoch}", save_top_k=-1, every_n_epochs=1)
    unfreezing = ProgressiveUnfreezing(**SCHEDULES[schedule])
    reference = model(head="mlp", dropout=0.3)
    trainer(tmp_path, [unfreezing, *callbacks(), every_epoch], max_epochs=EPOCHS).fit(reference, train, val)
    assert unfreezing.phase >= 2, "the schedule must change phase more than once within the run"
    expected = {k: v.clone() for k, v in reference.state_dict().items()}

    for epoch in range(EPOCHS - 1):
        resumed = model(head="mlp", dropout=0.3)
        resumed_unfreezing = ProgressiveUnfreezing(**SCHEDULES[schedule])
        trainer(tmp_path / f"resume{epoch}", [resumed_unfreezing, *callbacks()], max_epochs=EPOCHS).fit(
            resumed, train, val, ckpt_path=tmp_path / "ckpt" / f"epoch={epoch}.ckpt"
        )
        assert max_difference(expected, resumed.state_dict()) == 0.0, f"resumed from the end of epoch {epoch}"
        assert resumed.backbone.trainable_group_names == reference.backbone.trainable_group_names
        assert resumed_unfreezing.phase == unfreezing.phase


def test_checkpoint_holds_callback_progress_in_plain_types(tmp_path):
    train, val = loaders()
    trainer_ = trainer(tmp_path, [ProgressiveUnfreezing(every_n_epochs=1), LRWarmup(duration=3)], max_epochs=2)
    trainer_.fit(model(), train, val)
    trainer_.save_checkpoint(tmp_path / "last.ckpt")
    states = torch.load(tmp_path / "last.ckpt", weights_only=True)["callbacks"]
    unfreezing = next(v for k, v in states.items() if k.startswith("ProgressiveUnfreezing"))
    warmup = next(v for k, v in states.items() if k.startswith("LRWarmup"))
    assert unfreezing["phase"] == 1 and unfreezing["trainable_groups"] == ["layer4.0"]
    assert warmup["started_at"] == {"head": 0, "layer4.0": 4}


def test_last_checkpoint_follows_the_latest_epoch_even_without_improvement(tmp_path):
    from tlkit.callbacks import ResumableCheckpoint

    train, val = loaders()
    # `max` on the loss: after the first epoch it (almost) never "improves", so Lightning's save_last would stall.
    checkpoint = ResumableCheckpoint(tmp_path / "ckpt", monitor="val/loss", mode="max", save_last=True, save_top_k=1)
    trainer(tmp_path, [checkpoint], max_epochs=4).fit(model(), train, val)
    last = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 3 and last["global_step"] == 16
    assert not list((tmp_path / "ckpt").glob(".*.partial")), "no temporary file is left behind"


def test_a_half_written_checkpoint_of_a_killed_run_is_removed_and_a_live_ones_kept(tmp_path):
    import os
    import socket

    from tlkit.callbacks.resumable_checkpoint import partial_path, remove_abandoned_partials

    folder = tmp_path / "logs" / "run" / "version_0" / "checkpoints"
    folder.mkdir(parents=True)
    live = partial_path(folder / "last.ckpt")  # this process: still writing
    live.write_bytes(b"")
    dead = folder / f".last.ckpt.{socket.gethostname()}.{2**22 + 12345}.partial"  # above any pid this host gives
    dead.write_bytes(b"")
    elsewhere = folder / ".last.ckpt.other-host.1.partial"  # another machine of a shared filesystem
    elsewhere.write_bytes(b"")
    assert remove_abandoned_partials(tmp_path / "logs" / "run") == [dead]
    assert live.exists() and elsewhere.exists() and str(os.getpid()) in live.name


class Killed(Exception):
    pass


class StopAtStep(Callback):
    """Stops the fit as a kill would, after the checkpoint of step ``step`` (mid-epoch)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise Killed


class LastCheckpointSteps(Callback):
    """Records the global step ``last.ckpt`` holds at the start of every training batch."""

    def __init__(self, folder) -> None:
        self.folder, self.steps = folder, []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        path = self.folder / "last.ckpt"
        self.steps.append(torch.load(path, weights_only=True)["global_step"] if path.exists() else None)


def test_step_saves_refresh_last_after_a_resume_and_wait_for_the_validation_ending_an_epoch(tmp_path):
    from tlkit.callbacks import ResumableCheckpoint

    train, val = loaders()  # 4 steps an epoch

    def every_step() -> ResumableCheckpoint:
        return ResumableCheckpoint(
            tmp_path / "ckpt", monitor="val/acc", mode="max", save_last=True, every_n_train_steps=1
        )

    killed = trainer(tmp_path, [every_step(), StopAtStep(5)], max_epochs=2)
    with pytest.raises(Killed):
        killed.fit(model(temperature_scaling=True), train, val)
    assert torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)["global_step"] == 5
    recorder = LastCheckpointSteps(tmp_path / "ckpt")
    resumed = model(temperature_scaling=True)
    trainer(tmp_path, [every_step(), recorder], max_epochs=2).fit(
        resumed, train, val, ckpt_path=tmp_path / "ckpt" / "last.ckpt"
    )
    # Each step since the resume is in last.ckpt before the next starts, with no validation yet to name a metric.
    assert recorder.steps == [5, 6, 7]
    last = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)
    # Step 8 ends the epoch: saved after its validation, with the temperature that validation fitted.
    assert last["global_step"] == 8
    assert last["state_dict"]["calibration_temperature"] == resumed.calibration_temperature
