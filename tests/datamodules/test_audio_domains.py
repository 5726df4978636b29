"""Domain adaptation on audio: synthetic voices to recorded ones (both shipped), folders of the user's clips, target
views and indices as the strategies ask for them, two domains' clips joined into one batch, a kill-and-resume run
of the shipped config through the `tlkit` command, and SHOT adapting a source-only model."""

from __future__ import annotations

import json

import pytest
import torch

from tests._audio_data import write_clips
from tests._console import REPO, run_here, run_here_captured
from tlkit.backbones import AudioConfig
from tlkit.data_request import DataRequest
from tlkit.datamodules import AudioDomainFolderDataModule, VoicesDomainDataModule
from tlkit.errors import ConfigError
from tlkit.functional import input_count, join_inputs
from tlkit.strategies.shot import CHECKPOINT_KEY

pytest.importorskip("soundfile")
CONFIG = str(REPO / "configs" / "domain_adaptation" / "voices_dann.yaml")


def test_synthetic_voices_adapt_to_the_recorded_ones_with_the_target_test_held_out():
    dm = VoicesDomainDataModule(task="language")
    dm.setup("fit")
    assert dm.classes == ["en", "es", "fr", "it"] and dm.test_split == "target_test"
    source = dm.splits["source_train"].samples + dm.splits["source_val"].samples
    target = [dm.splits[name].samples for name in ("target_train", "target_val", "target_test")]
    assert len(source) == 420 and all("synthetic_voices" in path for path in source)
    assert sum(map(len, target)) == 84 and all("/voices/" in path for split in target for path in split)
    assert not set(target[0]) & set(target[2]) and len(target[2]) == 24  # 30% of each language, never trained on
    numbers = VoicesDomainDataModule(task="number")
    numbers.setup("fit")
    assert numbers.classes == [str(n) for n in range(21)]
    with pytest.raises(ConfigError, match="Expected `task` to be 'language' or 'number'"):
        VoicesDomainDataModule(task="speaker")


def test_target_views_come_padded_with_their_lengths_weak_and_strong_with_indices():
    dm = VoicesDomainDataModule(batch_size=4)
    dm.setup("fit")
    strong_request = DataRequest(input_config=AudioConfig(), target_views="weak_strong", target_indices=True)
    (weak, strong), indices = next(
        iter(
            torch.utils.data.DataLoader(
                dm.target_training_set(strong_request), batch_size=4, collate_fn=dm._loader_options()["collate_fn"]
            )
        )
    )
    assert indices.tolist() == [0, 1, 2, 3]
    assert torch.equal(weak["lengths"], strong["lengths"]) and weak["waveform"].shape == strong["waveform"].shape
    # The same crop and gain (one seed for both views); the strong view adds noise.
    assert not torch.equal(weak["waveform"], strong["waveform"])
    for row, length in enumerate(weak["lengths"]):
        assert weak["waveform"][row, length:].abs().sum() == 0  # padding is silence
        assert length <= round(1.6 * 16000)  # cropped to the backbone's training length
    # Two domains' clips of different lengths join into one batch, each keeping its length.
    short = {"waveform": torch.ones(2, 100), "lengths": torch.tensor([100, 50])}
    joined = join_inputs(short, weak)
    assert input_count(joined) == 6 and joined["waveform"].shape[1] == max(100, weak["waveform"].shape[1])
    assert joined["lengths"].tolist()[:2] == [100, 50] and joined["waveform"][0, 100:].abs().sum() == 0


def test_folders_of_the_users_clips_are_two_domains_with_the_same_classes(tmp_path):
    write_clips(tmp_path / "studio"), write_clips(tmp_path / "phone")
    dm = AudioDomainFolderDataModule(root=str(tmp_path), source_dir="studio", target_dir="phone", batch_size=4)
    dm.setup("fit")
    assert dm.classes == ["high", "low"] and len(dm.splits["source_train"].samples) > 0
    (tmp_path / "phone" / "high").rename(tmp_path / "phone" / "middle")
    other = AudioDomainFolderDataModule(root=str(tmp_path), source_dir="studio", target_dir="phone")
    with pytest.raises(ConfigError, match="phone"):
        other.setup("fit")


def test_the_shipped_config_killed_mid_run_continues_bitwise_then_tests(tmp_path, capfd):
    run = ["fit", "--config", CONFIG, "--trainer.max_epochs=2", "--data.init_args.iters_per_epoch=3"]
    run += ["--checkpoint.every_n_train_steps=2", "--trainer.enable_model_summary=false"]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    straight.mkdir(), killed.mkdir()
    run_here(run, straight)
    crash = ["--trainer.callbacks+=tests._kill.CrashAtStep", "--trainer.callbacks.init_args.step=5"]
    with pytest.raises(RuntimeError, match="crashed at step 5"):
        run_here(run + crash, killed)
    last = killed / "logs" / "voices_dann" / "version_0" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 4
    run_here([*run, "--ckpt_path", "last"], killed)
    expected = torch.load(straight / last.relative_to(killed), weights_only=True)["state_dict"]
    got = torch.load(last, weights_only=True)["state_dict"]
    assert any(key.startswith("discriminator") for key in got)
    for key, tensor in expected.items():
        assert torch.equal(tensor, got[key]), key
    config = str(last.parents[1] / "config.yaml")
    tested = run_here_captured(["test", "--config", config, f"--ckpt_path={last}"], killed, capfd)
    assert tested.returncode == 0 and "test/acc" in tested.stdout, tested.stderr[-2000:]
    predicted = run_here_captured(["predict", "--config", config, f"--ckpt_path={last}"], killed, capfd)
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    rows = next(killed.glob("logs/voices_dann/version_0/predictions/*.jsonl")).read_text().splitlines()
    assert len(rows) == 24 and all("/voices/" in json.loads(row)["file"] for row in rows)


def test_shot_adapts_a_source_only_audio_model_through_the_command(tmp_path, capfd):
    from tests.conftest import quiet_trainer
    from tlkit.strategies import SourceOnly

    source = SourceOnly("audio:resemblyzer")
    trainer = quiet_trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1, num_sanity_val_steps=0)
    trainer.fit(source, datamodule=VoicesDomainDataModule(batch_size=8))
    trainer.save_checkpoint(tmp_path / "source.ckpt")
    shot = ["--model=SHOT", f"--model.init_args.source_checkpoint={tmp_path / 'source.ckpt'}"]
    short = ["--trainer.max_epochs=1", "--data.init_args.iters_per_epoch=2", "--data.init_args.batch_size=8"]
    done = run_here_captured(["fit", "--config", CONFIG, *shot, *short], tmp_path, capfd)
    assert done.returncode == 0, done.stderr[-2000:]
    last = torch.load(tmp_path / "logs" / "voices_dann" / "version_0" / "checkpoints" / "last.ckpt", weights_only=True)
    start = torch.load(tmp_path / "source.ckpt", weights_only=True)["state_dict"]
    adapted = last["state_dict"]
    # The target pool's centroid pseudo-labels (52 clips) were computed and kept; the backbone adapted to them, the
    # source classifier stayed as it was.
    assert last["global_step"] == 2 and len(last[CHECKPOINT_KEY]["labels"]) == 52
    assert not torch.equal(adapted["backbone.model.lstm.2.weight_hh_l0"], start["backbone.model.lstm.2.weight_hh_l0"])
    assert all(torch.equal(adapted[key], start[key]) for key in start if key.startswith("head."))
