"""Export to ONNX and TorchScript: parity with the checkpoint, the same predictions as `tlkit predict`, the export
page's standalone snippet (docs/export.md) and the Audio page's (docs/audio.md), and one-line errors."""

import csv
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from tests._audio_data import tiny_wav2vec2, write_clips
from tests._console import run_here, run_here_captured, shipped
from tests._snippets import page_snippet
from tests.conftest import TINY_FIT_ARGS, quiet_trainer
from tlkit.cli import main
from tlkit.datamodules import DigitsDataModule, DigitsMDataModule, VoicesDataModule
from tlkit.datamodules.audio import bundled_voices
from tlkit.engines.export import FILES, export, load_strategy
from tlkit.engines.model_spec import SPEC_FILE
from tlkit.engines.preprocessing import preprocess, preprocessing_spec
from tlkit.engines.served_models import load_served_model
from tlkit.strategies import DANN, FineTuning


def fitted_checkpoint(model, datamodule, path: Path) -> Path:
    trainer = quiet_trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1, num_sanity_val_steps=0)
    trainer.fit(model, datamodule=datamodule)
    trainer.save_checkpoint(path)
    return path


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = FineTuning("test_resnet", weights=None, head="mlp", dropout=0.2)
    data = DigitsDataModule(image_size=40, labels_per_class=5, crop_pct=0.8)
    return fitted_checkpoint(model, data, tmp_path_factory.mktemp("tiny") / "tiny.ckpt")


def test_both_formats_reproduce_the_checkpoint_and_the_json_describes_them(tiny_checkpoint, tmp_path):
    report = export(tiny_checkpoint, tmp_path / "out")
    assert set(report.files) == {"onnx", "torchscript", "spec"} and report.images == 16
    assert all(0 <= d <= 1e-4 for d in report.max_difference.values()), report.max_difference
    spec = json.loads((tmp_path / "out" / SPEC_FILE).read_text())
    # The datamodule's overrides (40 px, crop 0.8), not the backbone's defaults: what the model was trained on.
    assert (spec["preprocessing"]["crop"], spec["preprocessing"]["resize"]) == (40, 50)
    assert spec["class_names"] == [str(d) for d in range(10)] and spec["output"]["shape"] == ["batch", 10]
    assert spec["files"] == {"onnx": FILES["onnx"], "torchscript": FILES["torchscript"]}
    assert spec["versions"]["torch"] == torch.__version__
    # One self-contained file per format: nothing else to ship beside model.json.
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted([*FILES.values(), SPEC_FILE])


def test_onnx_takes_any_batch_size(tiny_checkpoint, tmp_path):
    import onnxruntime

    export(tiny_checkpoint, tmp_path / "out", formats=["onnx"])
    session = onnxruntime.InferenceSession(str(tmp_path / "out" / "model.onnx"))
    for batch in (1, 5):
        probabilities = session.run(None, {"images": np.zeros((batch, 3, 40, 40), np.float32)})[0]
        assert probabilities.shape == (batch, 10) and np.allclose(probabilities.sum(1), 1, atol=1e-5)


def test_numpy_preprocessing_equals_the_training_transform():
    from tlkit.backbones import DataConfig
    from tlkit.datamodules.transforms import eval_transform

    config = DataConfig(image_size=48, crop_pct=0.875, mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3))
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (70, 90, 3), dtype=np.uint8))
    ours = preprocess(image, preprocessing_spec(config))
    assert np.abs(ours - eval_transform(config)(image).numpy()).max() < 1e-5


def test_domain_adaptation_exports_without_its_discriminator(tmp_path):
    torch.manual_seed(0)
    model = DANN("test_resnet", weights=None, discriminator_hidden_dim=16)
    data = DigitsMDataModule(image_size=32, batch_size=8, iters_per_epoch=2)
    checkpoint = fitted_checkpoint(model, data, tmp_path / "dann.ckpt")
    report = export(checkpoint, tmp_path / "out", formats=["onnx"])
    assert report.max_difference["onnx"] <= 1e-4
    names = [i.name for i in onnx.load(str(tmp_path / "out" / "model.onnx")).graph.initializer]
    assert not [n for n in names if "discriminator" in n]
    parameters = sum(int(np.prod(i.dims)) for i in onnx.load(str(tmp_path / "out" / "model.onnx")).graph.initializer)
    exported = sum(p.numel() for p in (*model.backbone.parameters(), *model.head.parameters()))
    assert parameters <= exported + sum(b.numel() for b in model.backbone.buffers())


def test_an_adapter_only_checkpoint_exports_merged_and_predicts_as_the_adapted_model(tmp_path):
    from tlkit.backbones import Adapter, Backbone

    weights = tmp_path / "pretrained.pt"
    torch.save(Backbone("test_resnet", weights=None).model.state_dict(), weights)
    adapter = Adapter(rank=2, checkpoint="adapter_only")
    model = FineTuning("test_resnet", weights=str(weights), adapter=adapter)
    checkpoint = fitted_checkpoint(model, DigitsDataModule(image_size=32, labels_per_class=3), tmp_path / "lora.ckpt")
    report = export(checkpoint, tmp_path / "out", formats=["onnx"])
    assert report.max_difference["onnx"] <= 1e-4
    names = [i.name for i in onnx.load(str(tmp_path / "out" / "model.onnx")).graph.initializer]
    assert not [n for n in names if "lora" in n or "base_layer" in n]  # merged: a plain network
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        adapted = model.eval()(images).softmax(-1)
        exported = load_strategy(checkpoint)
        exported.backbone.merge_adapter()
        torch.testing.assert_close(exported(images).softmax(-1), adapted, atol=1e-5, rtol=0)


def test_lite0_with_its_real_weights_exports_within_tolerance(tmp_path):
    model = FineTuning("tf_efficientnet_lite0", num_classes=10)
    checkpoint = fitted_checkpoint(model, DigitsDataModule(image_size=64, labels_per_class=2), tmp_path / "l0.ckpt")
    report = export(checkpoint, tmp_path / "out")
    assert max(report.max_difference.values()) <= 1e-4, report.max_difference


def test_exported_model_and_the_docs_snippet_predict_what_tlkit_predict_does(tmp_path, monkeypatch):
    snippet = page_snippet("export.md", "export-snippet")
    assert len([line for line in snippet.splitlines() if line.strip()]) <= 17
    assert not re.search(r"^\s*(import|from)\s+(torch|tlkit)", snippet, re.M)
    monkeypatch.chdir(tmp_path)
    main(["fit", *TINY_FIT_ARGS, "--trainer.max_epochs=1"])
    checkpoint = tmp_path / "logs" / "tlkit" / "version_0" / "checkpoints" / "last.ckpt"
    # The digits test split, as image files.
    data = DigitsDataModule(image_size=32, labels_per_class=3)
    data.setup()
    folder = tmp_path / "test_split"
    folder.mkdir()
    for i, image in enumerate(data.splits["test"].samples):
        image.save(folder / f"{i:04d}.png")
    # The same digits as the other file types users bring: read by the snippet as by `tlkit predict`.
    for i, image in enumerate(data.splits["test"].samples[:4]):
        grey16 = (np.asarray(image.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)  # full 16-bit range
        Image.fromarray(grey16).save(folder / f"g16_{i}.png")
        image.convert("P").save(folder / f"palette_{i}.png")
        image.convert("RGBA").save(folder / f"rgba_{i}.png")
        image.convert("CMYK").save(folder / f"cmyk_{i}.jpg", quality=95)
        image.convert("LA").save(folder / f"la_{i}.png")
    assert Image.open(folder / "g16_0.png").mode.startswith("I")
    main(["predict", "--ckpt_path", str(checkpoint), f"--data.predict_dir={folder}"])
    predictions = tmp_path / "logs" / "tlkit" / "version_0" / "predictions" / "predictions-last.csv"
    expected = {
        Path(r["file"]).name: (r["prediction"], float(r["probability"])) for r in csv.DictReader(predictions.open())
    }
    main(["export", "--ckpt_path", str(checkpoint), "--out_dir", str(tmp_path / "exported"), "--formats=[onnx]"])
    (tmp_path / "snippet.py").write_text(snippet)
    out = subprocess.run(
        [sys.executable, "snippet.py", "exported", str(folder)], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    got = {name: (label, float(p)) for name, label, p in (line.split() for line in out)}
    assert got.keys() == expected.keys() and len(got) == len(data.splits["test"].samples) + 20
    assert all(got[n][0] == expected[n][0] and abs(got[n][1] - expected[n][1]) < 1e-4 for n in got), [
        (n, got[n], expected[n]) for n in got if abs(got[n][1] - expected[n][1]) >= 1e-4
    ]


def test_verification_reads_images_as_the_recipe_does_and_covers_every_mode():
    from tlkit.datamodules import to_rgb
    from tlkit.engines.preprocessing import decode, verification_images

    images = verification_images()
    assert {"I;16", "P", "RGBA", "CMYK", "LA", "RGB"} <= {image.mode for image in images}
    for image in images:  # the recipe and tlkit's loader agree pixel for pixel on every mode tlkit accepts
        assert np.array_equal(np.asarray(decode(image)), np.asarray(to_rgb(image))), image.mode


@pytest.mark.parametrize(
    ("make_args", "match"),
    [
        (lambda t, c: ["--ckpt_path", str(t / "none.ckpt")], r"`ckpt_path` to be a checkpoint written.*no such"),
        (lambda t, c: ["--ckpt_path", str(t / "plain.ckpt")], r"checkpoint written by a tlkit strategy"),
        (lambda t, c: ["--ckpt_path", str(c), "--formats=[tflite]"], r"`formats` to be one of 'onnx', 'torchscript'"),
        (lambda t, c: ["--ckpt_path", str(c), "--out_dir", str(t / "full")], r"`out_dir` to be a new or empty"),
        (lambda t, c: ["--ckpt_path", str(c), "--out_dir", "/proc/tlkit"], r"`out_dir` to be a folder tlkit can"),
    ],
)
def test_bad_export_input_is_one_line(make_args, match, tiny_checkpoint, tmp_path, capsys):
    torch.save({"state_dict": {}}, tmp_path / "plain.ckpt")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "model.onnx").write_text("an earlier export")
    args = make_args(tmp_path, tiny_checkpoint)
    if "--out_dir" not in args:
        args += ["--out_dir", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as exit_info:
        main(["export", *args])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith("tlkit export: error: ") and len(err.splitlines()) == 2
    assert re.search(match, err), err
    assert (tmp_path / "full" / "model.onnx").read_text() == "an earlier export"  # never overwritten


def test_a_failed_export_leaves_no_folder_behind(tiny_checkpoint, tmp_path, capsys):
    (tmp_path / "no_images").mkdir()
    (tmp_path / "no_images" / "notes.txt").write_text("no image here")

    def export_without_images(out_dir: Path) -> None:
        args = ["--ckpt_path", str(tiny_checkpoint), "--out_dir", str(out_dir), "--images", str(tmp_path / "no_images")]
        with pytest.raises(SystemExit):
            main(["export", *args])

    out = tmp_path / "new" / "exported"
    export_without_images(out)
    assert "tlkit export: error: " in capsys.readouterr().err
    assert not out.exists()
    (tmp_path / "empty").mkdir()  # an empty folder the user made stays, empty
    export_without_images(tmp_path / "empty")
    assert (tmp_path / "empty").is_dir() and not any((tmp_path / "empty").iterdir())


def test_load_strategy_needs_no_download(tiny_checkpoint):
    model = load_strategy(tiny_checkpoint)
    assert type(model).__name__ == "FineTuning" and not model.training
    assert model.trained_data_config.image_size == 40


class Noise(torch.nn.Module):
    """Random in eager mode and in the exported graph alike, so the two can never agree."""

    def forward(self, x):
        return x + torch.rand_like(x)


def test_a_diverging_export_names_the_layer_group_and_its_operators():
    from tlkit.backbones import Backbone
    from tlkit.engines.export import locate_divergence

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.Sequential(Noise(), torch.nn.Conv2d(4, 6, 3)), torch.nn.AdaptiveAvgPool2d(1)
    )
    backbone = Backbone(model=net, num_features=6).eval()
    where = locate_divergence(backbone, torch.randn(2, 3, 16, 16))
    assert where.startswith("the first layer group whose output differs is '1.1'"), where
    assert "RandomUniformLike" in where and "Conv" in where


def test_a_failed_verification_is_one_line_and_keeps_the_files(tiny_checkpoint, tmp_path, monkeypatch, capsys):
    import tlkit.engines.export as exporting

    original = exporting._export_onnx

    def off_by_a_little(*args):
        run = original(*args)
        return lambda batch: run(batch) + 1e-3

    monkeypatch.setattr(exporting, "_export_onnx", off_by_a_little)
    with pytest.raises(SystemExit):
        main(["export", "--ckpt_path", str(tiny_checkpoint), "--out_dir", str(tmp_path / "out"), "--formats=[onnx]"])
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 2 and "|difference| <= 0.0001 + 0.001 x |value|" in err, err
    assert "probabilities are outside it" in err and "head or the softmax" in err, err
    assert (tmp_path / "out" / "model.onnx").is_file()


def test_each_task_judges_an_export_by_a_relative_and_absolute_tolerance_and_what_users_rely_on():
    """|difference| <= atol + rtol x |value| per output kind, then the same top class, label set, mask or boxes: a
    near tie may flip, a clear answer may not, however loose the tolerance."""
    from tlkit.tasks import Classification, Detection, MultiLabel, Regression, Segmentation

    classifier = Classification()
    classifier.build(3)
    probabilities = np.array([[0.7, 0.25, 0.05], [0.5, 0.4999, 0.0001]])
    check = classifier.check_export(probabilities + 1.8e-4 * np.array([1, -1, 0]), probabilities)
    assert check.passed and check.max_abs_difference == pytest.approx(1.8e-4)  # 0.7 and 0.25 move within rtol
    assert not classifier.check_export(probabilities + np.array([0, 0, 2e-4]), probabilities).passed  # 0.05 + 2e-4
    tie = probabilities.copy()
    tie[1, :2] = [0.49995, 0.49995 + 1e-5]
    assert classifier.check_export(tie, probabilities).passed  # a near tie decided the other way is no error
    flipped = probabilities[:, [1, 0, 2]]
    check = classifier.check_export(flipped, probabilities, scale=1e4)
    assert check.problem == "the top class differs on 1 of 2 images" and "the same top class" in check.criterion

    labels = MultiLabel(threshold=0.5)
    labels.build(2)
    scores = np.array([[0.9, 0.3]])
    assert labels.check_export(scores + 1e-4, scores).passed
    assert "label set differs on 1" in labels.check_export(np.array([[0.9, 0.6]]), scores, scale=1e4).problem

    regression = Regression()
    regression.build(1)
    regression.target_std.fill_(40.0)
    values = np.array([[612.5], [0.0]])
    assert regression.check_export(values * (1 + 5e-5), values).passed  # float rounding of large values
    assert not regression.check_export(values + np.array([[1.0], [0.0]]), values).passed

    segmenter = Segmentation()
    segmenter.build(2)
    maps = np.zeros((1, 2, 2, 2))
    maps[0, 0], maps[0, 1] = 0.9, 0.1
    swapped = maps[:, ::-1]
    assert segmenter.check_export(maps + 5e-5, maps).passed
    assert segmenter.check_export(swapped, maps, scale=1e4).problem == "the mask differs at 4 of 4 pixels"

    detector = Detection(score_threshold=0.05)
    detector.build(2)
    locations = np.array([[[100.0, 120.0, 480.0, 612.5, 0.9, 0.1], [0.0, 0.0, 8.0, 8.0, 0.01, 0.02]]])
    rounded = locations.copy()
    rounded[..., :4] *= 1 + 5e-5
    assert detector.check_export(rounded, locations).passed  # float rounding of 600-pixel boxes
    moved = locations.copy()
    moved[0, 0, :4] += 40.0
    check = detector.check_export(moved, locations, scale=1e4)
    assert check.problem == "1 of 1 boxes scoring over the threshold moved or changed class", check
    assert not detector.check_export(locations + np.array([1.0, 0, 0, 0, 0, 0]), locations).passed  # a pixel off


def test_model_json_is_one_typed_record_that_reads_back(tiny_checkpoint, tmp_path):
    """What export writes, `read_model_spec` reads (a server, another tool); a newer format is one line."""
    import json

    from tlkit.engines.model_spec import FORMAT_VERSION, read_model_spec
    from tlkit.errors import ConfigError

    export(tiny_checkpoint, tmp_path / "out", formats=["onnx"])
    spec = read_model_spec(tmp_path / "out")
    assert spec.format_version == FORMAT_VERSION and spec.files == {"onnx": "model.onnx"}
    assert spec.output["name"] == "probabilities" and spec.task["name"] == "classification"
    assert spec.verification["criterion"].endswith("and the same top class")
    saved = json.loads((tmp_path / "out" / SPEC_FILE).read_text())
    (tmp_path / "out" / SPEC_FILE).write_text(json.dumps({**saved, "format_version": FORMAT_VERSION + 1}))
    with pytest.raises(ConfigError, match="written by a newer tlkit"):
        read_model_spec(tmp_path / "out")


def test_an_audio_model_exports_with_its_front_end_and_the_page_snippet_predicts_what_tlkit_predict_does(
    tmp_path, capfd
):
    import onnxruntime

    from tlkit.engines.audio_preprocessing import pad_clips, read_clip

    snippet = page_snippet("audio.md", "audio-export-snippet")
    assert not re.search(r"^\s*(import|from)\s+(torch|tlkit)", snippet, re.M)
    run_here(shipped("voices_speaker_id.yaml", "--trainer.max_epochs=1", "--trainer.limit_train_batches=3"), tmp_path)
    run = tmp_path / "logs" / "voices_speaker_id" / "version_0"
    checkpoint, config = run / "checkpoints" / "last.ckpt", run / "config.yaml"
    # Clips as users' recorders write them (44.1 kHz stereo WAV, 8 kHz FLAC) and recorded speech.
    clips = write_clips(tmp_path / "clips")
    (clips / "speech").mkdir()
    for voice in ("en_allison", "fr_june"):
        shutil.copy(bundled_voices() / voice / "7.flac", clips / "speech" / f"{voice}.flac")
    predict = ["predict", "--config", str(config), f"--ckpt_path={checkpoint}", f"--data.init_args.predict_dir={clips}"]
    assert run_here_captured(predict, tmp_path, capfd).returncode == 0
    rows = [json.loads(row) for row in next(run.glob("predictions/*.jsonl")).read_text().splitlines()]
    expected = {row["file"]: (row["prediction"], row["probability"]) for row in rows}
    exported = tmp_path / "exported"
    done = run_here_captured(["export", f"--ckpt_path={checkpoint}", f"--out_dir={exported}"], tmp_path, capfd)
    assert done.returncode == 0 and "Verified on 16 clips" in done.stdout, done.stderr[-2000:]
    spec = json.loads((exported / SPEC_FILE).read_text())
    assert spec["input"]["shape"] == ["batch", "samples"] and spec["input"]["lengths"]["dtype"] == "int64"
    assert spec["preprocessing"]["sample_rate"] == 16000 and spec["verification"]["clips"] == 16
    assert spec["class_names"] == ["allison", "carlo", "june"]
    # The exported model batches clips of different lengths: each one's output is its output alone.
    session = onnxruntime.InferenceSession(str(exported / FILES["onnx"]))
    waveforms = [read_clip(path, spec["preprocessing"]) for path in sorted((clips / "speech").iterdir())]
    together = session.run(None, pad_clips(waveforms))[0]
    assert len(waveforms[0]) != len(waveforms[1])
    for row, waveform in zip(together, waveforms):
        np.testing.assert_allclose(row, session.run(None, pad_clips([waveform]))[0][0], atol=1e-5)
    (tmp_path / "snippet.py").write_text(snippet)
    out = subprocess.run(
        [sys.executable, "snippet.py", str(exported), str(clips)], cwd=tmp_path, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-2000:]
    got = {path: (label, float(p)) for path, label, p in (line.split() for line in out.stdout.splitlines())}
    assert got.keys() == expected.keys() and len(got) == 26
    assert all(got[n][0] == expected[n][0] and abs(got[n][1] - expected[n][1]) < 1e-4 for n in got), [
        (n, got[n], expected[n]) for n in got if abs(got[n][1] - expected[n][1]) >= 1e-4
    ]
    # `tlkit serve` reads the same files (the sound files' own bytes) to the same answers, from the checkpoint in
    # torch and from the export folder in ONNX Runtime, the clips batched at their own lengths.
    for served, tolerance in ((load_served_model(checkpoint, None), 1e-5), (load_served_model(None, exported), 1e-4)):
        assert served.kind == "clips"
        answers = served.predict([served.decode(Path(path).read_bytes(), "file") for path in expected])
        for path, answer in zip(expected, answers):
            assert answer["prediction"] == expected[path][0], path
            assert abs(answer["probability"] - expected[path][1]) < tolerance, path


def test_a_waveform_encoder_exports_with_its_normalisation_inside(tmp_path):
    pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = FineTuning(f"hf:{tiny_wav2vec2(tmp_path / 'w2v')}", weights=None)
    checkpoint = fitted_checkpoint(model, VoicesDataModule(batch_size=8), tmp_path / "w2v.ckpt")
    report = export(checkpoint, tmp_path / "out")
    assert report.kind == "clips" and report.images == 16
    assert all(0 <= d <= 1e-5 for d in report.max_difference.values()), report.max_difference
