"""Audio clips as users keep them (class folders of WAV and FLAC at any rate and channel count) and the recorded
voices tlkit ships, through the datamodules and the `tlkit` command: resampled, cropped, padded, checked before
training, and a run killed mid-epoch that continues bitwise."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests._audio_data import write_clips
from tests._console import run_here, run_here_captured, shipped
from tlkit.backbones import AudioConfig
from tlkit.data_request import DataRequest
from tlkit.datamodules import AudioFolderDataModule, ImageFolderDataModule, VoicesDataModule
from tlkit.datamodules.audio import AudioClips
from tlkit.datamodules.datasets import Split
from tlkit.errors import ConfigError
from tlkit.randomness import SeededIndex

soundfile = pytest.importorskip("soundfile")


def test_clips_are_resampled_mixed_to_mono_and_padded_with_their_lengths(tmp_path):
    dm = AudioFolderDataModule(str(write_clips(tmp_path / "clips")), batch_size=4, val_fraction=0.25, test_fraction=0)
    dm.setup("fit")
    assert dm.classes == ["high", "low"] and len(dm.splits["train"].labels) + len(dm.splits["val"].labels) == 24
    request = DataRequest(input_config=AudioConfig(sample_rate=16000, max_seconds=0.3))
    clips = AudioClips(Split([str(tmp_path / "clips" / "low" / "5.wav")], [1]), 16000)
    waveform, label = clips[0]
    assert label == 1 and waveform.shape == (16000,)  # 1.0 s of 44.1 kHz stereo, at 16 kHz mono
    spectrum = np.abs(np.fft.rfft(waveform.numpy()))
    assert abs(int(np.argmax(spectrum)) - 231) <= 2  # the 231 Hz tone survives resampling (1 Hz per bin)
    evaluation = dm.dataset("val", request=request)
    batch, labels = next(
        iter(torch.utils.data.DataLoader(evaluation, batch_size=3, collate_fn=dm._loader_options()["collate_fn"]))
    )
    lengths = batch["lengths"]
    assert batch["waveform"].shape == (3, int(lengths.max())) and len(labels) == 3
    for row, length in enumerate(lengths.tolist()):  # whole clips, padded with silence after their end
        assert torch.all(batch["waveform"][row, length:] == 0)
    training = dm.dataset("train", request=request)
    first, again = training[SeededIndex(0, 7)][0], training[SeededIndex(0, 7)][0]
    assert first.shape == (4800,) and torch.equal(first, again)  # cropped to 0.3 s, the same crop for one seed
    assert not torch.equal(first, training[SeededIndex(0, 8)][0])
    noisy = AudioFolderDataModule(str(tmp_path / "clips"), noise_snr_db=[10, 10], gain_db=0, val_fraction=0.25)
    noisy.setup("fit")
    clean = AudioFolderDataModule(str(tmp_path / "clips"), gain_db=0, val_fraction=0.25)
    clean.setup("fit")
    with_noise, without = (dm.dataset("train", request=request)[SeededIndex(0, 7)][0] for dm in (noisy, clean))
    snr = 10 * torch.log10(without.square().mean() / (with_noise - without).square().mean())
    assert abs(float(snr) - 10.0) < 0.5  # the same crop, with noise 10 dB below the clip
    with pytest.raises(ConfigError, match=r"`noise_snr_db` to be \[low, high\] decibels with low <= high"):
        AudioFolderDataModule(str(tmp_path / "clips"), noise_snr_db=[30, 10])


def test_unusable_files_are_one_line_naming_them_before_training(tmp_path):
    root = write_clips(tmp_path / "clips")
    (root / "low" / "notes.txt").write_text("recorded on tuesday")
    with pytest.raises(ConfigError, match=r"'.*notes.txt' is not an audio file \(.wav, .flac") as error:
        AudioFolderDataModule(str(root)).setup("fit")
    assert "\n" not in str(error.value)
    (root / "low" / "notes.txt").unlink()
    soundfile.write(root / "high" / "silent.wav", np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(
        ConfigError, match=r"'.*silent.wav' is empty \(no samples\): remove it, or set `on_invalid: skip`"
    ):
        AudioFolderDataModule(str(root)).setup("fit")
    (root / "high" / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    with pytest.warns(UserWarning, match=r"Skipped 2 unusable file\(s\): .*broken.wav \(not an audio file soundfile"):
        skipping = AudioFolderDataModule(str(root), on_invalid="skip")
        skipping.setup("fit")
    assert sum(len(split.labels) for split in skipping.splits.values()) == 24
    images = ImageFolderDataModule(str(root))
    with pytest.raises(ConfigError, match=r"Expected an audio backbone .* but the model's backbone reads images"):
        AudioFolderDataModule(str(root)).audio_config(DataRequest(input_config=images.resolve_data_config()))


def test_the_bundled_voices_name_three_speakers_and_four_languages():
    speakers = VoicesDataModule()
    speakers.setup("fit")
    assert speakers.classes == ["allison", "carlo", "june"]
    languages = VoicesDataModule(task="language")
    languages.setup("fit")
    assert languages.classes == ["en", "es", "fr", "it"]
    clips = sum(len(split.labels) for split in languages.splits.values())
    assert clips == 84 and all(path.endswith(".flac") for path in languages.splits["test"].samples)
    assert (Path(speakers.splits["train"].samples[0]).parents[1] / "ATTRIBUTION.md").is_file()


RUN = [
    *shipped("voices_speaker_id.yaml"),
    "--data.init_args.batch_size=8",
    "--trainer.max_epochs=2",
    "--checkpoint.every_n_train_steps=3",
    "--trainer.enable_model_summary=false",
]


def test_the_shipped_config_killed_mid_epoch_continues_bitwise_then_tests_and_predicts(tmp_path, capfd):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    straight.mkdir(), killed.mkdir()
    run_here(RUN, straight)
    # TensorBoard: the worst validation clips' spectrograms (Images tab) and the clips themselves (Audio tab).
    events = EventAccumulator(str(straight / "logs" / "voices_speaker_id" / "version_0"), size_guidance={"audio": 0})
    events.Reload()
    assert "val/worst_examples" in events.Tags()["images"]
    clips = [tag for tag in events.Tags()["audio"] if tag.startswith("val/worst_clips/")]
    assert len(clips) == 12  # every validation clip, at most 16
    assert events.Audio(clips[0])[-1].sample_rate == 16000
    # 8 steps an epoch (60 training clips): a crash at step 11 (epoch 1, after step 9's checkpoint) saves nothing.
    crash = ["--trainer.callbacks+=tests._kill.CrashAtStep", "--trainer.callbacks.init_args.step=11"]
    with pytest.raises(RuntimeError, match="crashed at step 11"):
        run_here(RUN + crash, killed)
    last = killed / "logs" / "voices_speaker_id" / "version_0" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 9
    run_here([*RUN, "--ckpt_path", "last"], killed)
    expected = torch.load(straight / last.relative_to(killed), weights_only=True)["state_dict"]
    got = torch.load(last, weights_only=True)["state_dict"]
    assert any(key.startswith("backbone.model.lstm.2") for key in got)
    for key, tensor in expected.items():
        assert torch.equal(tensor, got[key]), key
    config = str(last.parents[1] / "config.yaml")
    tested = run_here_captured(["test", "--config", config, f"--ckpt_path={last}"], killed, capfd)
    assert tested.returncode == 0, tested.stderr[-2000:]
    predicted = run_here_captured(["predict", "--config", config, f"--ckpt_path={last}"], killed, capfd)
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    rows = next(killed.glob("logs/voices_speaker_id/version_0/predictions/*.jsonl")).read_text().splitlines()
    files = [json.loads(row)["file"] for row in rows]
    assert len(files) == 12 and all(name.endswith(".flac") for name in files)
    # New clips in a folder of the user's (a stereo 44.1 kHz WAV among them), and a file that is no clip: named.
    clips = write_clips(tmp_path / "new")
    (clips / "high" / "notes.txt").write_text("not audio")
    folder = [f"--data.init_args.predict_dir={clips}"]
    predicted = run_here_captured(["predict", "--config", config, f"--ckpt_path={last}", *folder], killed, capfd)
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    assert "skipped 1 of 25 file(s)" in predicted.stdout + predicted.stderr
    written = killed.glob("logs/voices_speaker_id/version_0/predictions/*.jsonl")
    newest = max(written, key=lambda path: path.stat().st_mtime_ns)  # the first predictions are kept beside it
    named = sorted(json.loads(row)["file"] for row in newest.read_text().splitlines())
    assert len(named) == 24 and all(Path(name).is_relative_to(clips) for name in named)


def test_a_linear_probe_on_clips_caches_their_features_once(tmp_path, capfd):
    probe = [
        "fit",
        "--model=FeatureExtraction",
        "--model.init_args.backbone=audio:resemblyzer",
        "--data=VoicesDataModule",
        "--data.init_args.augment=false",  # clips read whole: the same features every epoch
        "--trainer.max_epochs=2",
        "--trainer.enable_model_summary=false",
    ]
    result = run_here_captured(probe, tmp_path, capfd)
    assert result.returncode == 0, result.stderr[-2000:]
    printed = result.stdout + result.stderr
    assert printed.count("FeatureCache: computed train features (60 samples)") == 1  # two epochs, one pass


def write_table(root: Path) -> Path:
    """A spreadsheet export naming clips (relative paths) with a set of tags and a number per clip."""
    clips = write_clips(root / "clips")
    lines = ["file,tags,pitch"]
    for name, hz in (("high", 880), ("low", 220)):
        for i in range(6):
            tags = f"tone;{name}" + (";long" if i >= 3 else "")
            lines.append(f"clips/{name}/{i}.wav,{tags},{hz * (1 + 0.01 * i):.1f}")
    (root / "clips.csv").write_text("\n".join(lines) + "\n")
    assert clips.is_dir()
    return root / "clips.csv"


@pytest.mark.parametrize(
    ("task", "arguments", "outputs"),
    [
        ("MultiLabel", ["--data.init_args.multi_label=true", "--data.init_args.label_column=tags"], 4),
        ("Regression", ["--data.init_args.target_columns=[pitch]"], 1),
    ],
)
def test_a_table_of_clips_trains_label_sets_and_numbers_through_the_command(tmp_path, capfd, task, arguments, outputs):
    table = write_table(tmp_path)
    run = [
        "fit",
        "--model=FineTuning",
        "--model.init_args.backbone=audio:resemblyzer",
        f"--model.init_args.task={task}",
        "--data=AudioTableDataModule",
        f"--data.init_args.train={table}",
        "--data.init_args.audio_column=file",
        *arguments,
        "--data.init_args.batch_size=4",
        "--trainer.max_epochs=1",
        "--trainer.enable_model_summary=false",
    ]
    result = run_here_captured(run, tmp_path, capfd)
    assert result.returncode == 0, result.stderr[-2000:]
    last = next(tmp_path.glob("logs/*/version_0/checkpoints/last.ckpt"))
    head = [v for k, v in torch.load(last, weights_only=True)["state_dict"].items() if k.endswith("head.weight")]
    assert head and head[0].shape[0] == outputs


def test_a_table_row_naming_a_missing_or_broken_clip_is_one_line(tmp_path):
    from tlkit.datamodules import AudioTableDataModule

    table = write_table(tmp_path)
    table.write_text(table.read_text() + "clips/low/none.wav,tone,1.0\n")
    with pytest.raises(ConfigError, match=r"clip 'clips/low/none.wav' of .*clips.csv:14 to exist, but"):
        AudioTableDataModule(str(table), audio_column="file", label_column="tags").setup("fit")
    (tmp_path / "clips" / "low" / "none.wav").write_bytes(b"not a wave file")
    with pytest.raises(ConfigError, match=r"readable audio clip at .*clips.csv:14, but .*none.wav' is not an audio"):
        AudioTableDataModule(str(table), audio_column="file", label_column="tags").setup("fit")


def test_a_hugging_face_dataset_of_clips_saved_with_their_bytes_trains_through_the_command(tmp_path, capfd):
    datasets = pytest.importorskip("datasets")
    from tlkit.datamodules import HuggingFaceAudioDataModule

    clips = write_clips(tmp_path / "clips")
    # A DatasetDict with an Audio column (the clips' bytes) and a ClassLabel in its own order, saved to disk. (Made
    # from a column of bytes cast to Audio: writing Audio values directly needs torchcodec, which reading does not.)
    files = sorted(clips.glob("*/*.flac"))
    features = datasets.Features(
        {"audio": datasets.Value("binary"), "pitch": datasets.ClassLabel(names=["low", "high"])}
    )
    rows = {"audio": [f.read_bytes() for f in files], "pitch": [int(f.parent.name == "high") for f in files]}
    table = datasets.Dataset.from_dict(rows, features=features)
    saved = table.cast_column("audio", datasets.Audio(decode=False))
    assert isinstance(saved.features["audio"], datasets.Audio)
    datasets.DatasetDict({"train": saved}).save_to_disk(str(tmp_path / "saved"))
    run = [
        "fit",
        "--model=FineTuning",
        "--model.init_args.backbone=audio:resemblyzer",
        "--data=HuggingFaceAudioDataModule",
        f"--data.init_args.path={tmp_path / 'saved'}",
        "--data.init_args.label_column=pitch",
        "--data.init_args.batch_size=4",
        "--data.init_args.val_fraction=0.25",
        "--data.init_args.test_fraction=0.25",
        "--trainer.max_epochs=1",
        "--trainer.enable_model_summary=false",
    ]
    result = run_here_captured(run, tmp_path, capfd)
    assert result.returncode == 0, result.stderr[-2000:]
    from tlkit.checkpoint import read_checkpoint

    info = read_checkpoint(next(tmp_path.glob("logs/*/version_0/checkpoints/last.ckpt"))).info
    assert info.class_names == ("low", "high") and info.data_source["path"] == str(tmp_path / "saved")
    broken = dict(rows, audio=[b"RIFF0000"] + rows["audio"][1:])  # a column of bytes, as pandas writes one
    datasets.Dataset.from_dict(broken, features=features).save_to_disk(str(tmp_path / "broken"))
    with pytest.raises(ConfigError, match=r"readable clip in `audio` of every row, but .* split 'train' row 0 is not"):
        HuggingFaceAudioDataModule(str(tmp_path / "broken"), label_column="pitch").setup("fit")


def test_rank_tells_the_pretrained_speaker_encoder_from_a_random_one_on_the_voices(tmp_path, capsys, monkeypatch):
    from tlkit.cli.entry import main

    monkeypatch.chdir(tmp_path)
    candidates = "--candidates=[audio:resemblyzer, audio:resemblyzer@null]"
    main(["rank", "--data=VoicesDataModule", candidates, "--cache_features=memory", "--scores=[logme, knn_accuracy]"])
    ranked = json.loads((tmp_path / "logs" / "rank" / "version_0" / "ranking.json").read_text())
    assert [row["candidate"] for row in ranked] == ["audio:resemblyzer", "audio:resemblyzer@null"]  # best first
    scores = {row["candidate"]: row["scores"]["knn_accuracy"] for row in ranked}
    assert scores["audio:resemblyzer"] > scores["audio:resemblyzer@null"] + 0.2
    with pytest.raises(SystemExit):
        main(["rank", "--data=VoicesDataModule", "--layers_of=audio:resemblyzer"])
    assert "audio backbones are ranked as candidates" in capsys.readouterr().err
