"""Multi-label and regression runs from the `tlkit` command's entry point on the bundled canvases of real digits:
what each checkpoint keeps of its task, what ``predict`` writes, and an exported model that reproduces it; and the
strategies and callbacks composed with each task."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import quiet_trainer
from tlkit.callbacks import LRWarmup, ProgressiveUnfreezing, WiSEFT
from tlkit.checkpoint import read_checkpoint
from tlkit.cli import TLKitCLI
from tlkit.datamodules import MultiDigitsDataModule
from tlkit.engines.export import export
from tlkit.engines.preprocessing import preprocess
from tlkit.strategies import FeatureExtraction, FineTuning
from tlkit.strategies.regularization import L2SP
from tlkit.tasks import MultiLabel, Regression

CANVASES = ["--data=MultiDigitsDataModule", "--data.num_images=160", "--data.image_size=32"]
TINY = ["--model=FineTuning", "--model.backbone=test_resnet", "--model.weights=null"]
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.max_epochs=2"]


def run_task(folder: Path, task: list[str], targets: str) -> Path:
    """``tlkit fit`` then ``tlkit predict`` with the last checkpoint, in ``folder``; the run folder."""
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        TLKitCLI(args=["fit", *TINY, *task, *CANVASES, f"--data.targets={targets}", *QUIET])
        run = folder / "logs" / "tlkit" / "version_0"
        TLKitCLI(args=["predict", "--ckpt_path", str(run / "checkpoints" / "last.ckpt"), *QUIET[:1]])
    return run


def exported_outputs(checkpoint: Path, out: Path, images: list) -> tuple[np.ndarray, dict]:
    """The ONNX export's outputs on ``images``, fed through model.json's own recipe, and model.json."""
    report = export(checkpoint, out, formats=["onnx"])
    spec = json.loads((out / "model.json").read_text())
    pixels = np.stack([preprocess(image, spec["preprocessing"]) for image in images])
    session = onnxruntime.InferenceSession(str(report.files["onnx"]))
    return session.run(None, {"images": pixels})[0], spec


def test_multi_label_thresholds_are_fitted_kept_applied_by_predict_and_exported(tmp_path):
    run = run_task(tmp_path, ["--model.task=MultiLabel", "--model.temperature_scaling=true"], "labels")
    assert any("val_map" in p.name for p in (run / "checkpoints").glob("epoch*"))  # selected on the task's metric
    checkpoint = read_checkpoint(run / "checkpoints" / "last.ckpt", "ckpt_path")
    thresholds = checkpoint.contents["state_dict"]["task.thresholds"]
    assert thresholds.shape == (10,) and not torch.all(thresholds == 0.5)  # chosen on validation
    assert checkpoint.info.task["name"] == "multilabel" and checkpoint.info.task["thresholds"] == thresholds.tolist()
    rows = [json.loads(line) for line in (run / "predictions" / "predictions-last.jsonl").read_text().splitlines()]
    dm = MultiDigitsDataModule(targets="labels", num_images=160, image_size=32)
    dm.setup()
    assert len(rows) == len(dm.splits["test"].labels)
    names = [str(d) for d in range(10)]
    for row in rows:
        chosen = [n for n, t in zip(names, thresholds.tolist()) if row["probabilities"][n] >= t]
        assert row["labels"] == chosen
    outputs, spec = exported_outputs(run / "checkpoints" / "last.ckpt", tmp_path / "export", dm.splits["test"].samples)
    assert spec["task"]["thresholds"] == thresholds.tolist() and spec["output"]["name"] == "probabilities"
    written = np.array([[row["probabilities"][n] for n in names] for row in rows])
    np.testing.assert_allclose(outputs, written, atol=1e-4)


def test_regression_answers_in_the_targets_units_and_the_export_reproduces_predict(tmp_path):
    run = run_task(tmp_path, ["--model.task=Regression"], "sum")
    assert any(p.name.startswith("epoch") and "val_mae" in p.name for p in (run / "checkpoints").iterdir())
    state = read_checkpoint(run / "checkpoints" / "last.ckpt", "ckpt_path").contents["state_dict"]
    dm = MultiDigitsDataModule(targets="sum", num_images=160, image_size=32)
    dm.setup()
    sums = dm.training_targets()[:, 0].astype(np.float64)
    assert float(state["task.target_mean"]) == pytest.approx(sums.mean()) and float(
        state["task.target_std"]
    ) == pytest.approx(sums.std())
    rows = [json.loads(line) for line in (run / "predictions" / "predictions-last.jsonl").read_text().splitlines()]
    values = np.array([[row["values"]["digit_sum"]] for row in rows])
    assert 0 < values.mean() < 36  # the sum's own units, not standard deviations around 0
    outputs, spec = exported_outputs(run / "checkpoints" / "last.ckpt", tmp_path / "export", dm.splits["test"].samples)
    assert spec["output"]["name"] == "values" and spec["task"]["target_mean"] == [pytest.approx(sums.mean())]
    np.testing.assert_allclose(outputs, values, atol=1e-4)


def canvases(targets: str, **kwargs) -> MultiDigitsDataModule:
    return MultiDigitsDataModule(targets=targets, num_images=120, image_size=32, batch_size=16, **kwargs)


def test_gradual_unfreezing_warm_up_l2_sp_and_wise_ft_compose_with_regression():
    model = FineTuning("test_resnet", weights=None, task=Regression(loss="huber"), l2_sp=L2SP(alpha=0.01))
    wise_ft = WiSEFT(alphas=[0.0, 0.5, 1.0], filename="wise_ft.ckpt")
    callbacks = [ProgressiveUnfreezing(every_n_epochs=1), LRWarmup(duration=3), wise_ft]
    trainer = quiet_trainer(max_epochs=3, limit_train_batches=3, callbacks=callbacks)
    trainer.fit(model, canvases("sum"))
    assert model.backbone.trainable_group_names  # unfrozen on schedule
    assert wise_ft.curve is not None and wise_ft.curve.best_alpha in (0.0, 0.5, 1.0)
    # Chosen on the task's own metric, lower is better: the kept mix has the smallest validation MAE.
    assert max(wise_ft.curve.scores) == wise_ft.curve.scores[wise_ft.curve.alphas.index(wise_ft.curve.best_alpha)]
    assert all(score <= 0 for score in wise_ft.curve.scores)  # -MAE, maximised
    assert "train/l2_sp" in trainer.logged_metrics or "train/l2_sp_step" in trainer.logged_metrics


def test_feature_extraction_trains_a_multi_label_head_on_cached_features():
    model = FeatureExtraction("test_resnet", weights=None, task=MultiLabel(pos_weight="auto"))
    trainer = quiet_trainer(max_epochs=2)
    trainer.fit(model, canvases("labels", augment=False))
    assert model.feature_cache.computed == 2  # train and val, once each for both epochs
    assert not torch.all(model.task.pos_weight == 1.0)  # negatives over positives of the training canvases
    assert set(trainer.test(model, canvases("labels"), verbose=False)[0]) >= {
        "test/map",
        "test/f1_micro",
        "test/f1_macro",
        "test/exact_match",
        "test/ece",
    }


def test_a_text_backbone_learns_label_sets_and_numbers_from_text_tables(tmp_path, tiny_bert):
    from tlkit.datamodules import TextFileDataModule

    words = {"sea": "waves", "sun": "beach", "snow": "peaks"}
    rows = []
    for i in range(48):
        tags = [tag for k, tag in enumerate(words) if (i >> k) & 1] or ["sun"]
        rows.append({"text": " ".join(words[t] for t in tags) + f" day {i}", "tags": tags, "length": len(tags)})
    table = tmp_path / "posts.jsonl"
    table.write_text("".join(json.dumps(row) + "\n" for row in rows))
    for task, data in (
        (MultiLabel(), TextFileDataModule(str(table), label_column="tags", multi_label=True, batch_size=8)),
        (Regression(), TextFileDataModule(str(table), target_columns=["length"], batch_size=8)),
    ):
        model = FineTuning(f"hf:{tiny_bert}", task=task)
        trainer = quiet_trainer(max_epochs=2)
        trainer.fit(model, data)
        result = trainer.test(model, data, verbose=False)[0]
        assert ("test/map" if isinstance(task, MultiLabel) else "test/mae") in result
        predicted = torch.cat(trainer.predict(model, data))
        assert predicted.shape == (len(data.splits["test"].labels), model.num_classes)
    assert 1.0 <= float(model.task.target_mean) <= 3.0  # the number of tags, learnt in its own units


def test_lora_adapters_train_a_multi_label_model_and_bss_a_regression():
    from tlkit.backbones import Adapter
    from tlkit.strategies.regularization import BSS

    lora = FineTuning("test_vit", weights=None, task=MultiLabel(), adapter=Adapter(rank=2, target_modules=["qkv"]))
    trainer = quiet_trainer(max_epochs=1, limit_train_batches=3)
    before = {k: v.clone() for k, v in lora.state_dict().items() if "lora_" in k}
    trainer.fit(lora, canvases("labels"))
    assert any(not torch.equal(before[k], v) for k, v in lora.state_dict().items() if k in before)
    bss = FineTuning("test_resnet", weights=None, task=Regression(), bss=BSS(weight=0.01))
    trainer = quiet_trainer(max_epochs=1, limit_train_batches=3)
    trainer.fit(bss, canvases("sum"))
    assert "train/bss_step" in trainer.logged_metrics and "val/mae" in trainer.logged_metrics


def test_a_checkpoint_monitor_of_the_users_keeps_the_direction_its_metric_has(tmp_path, monkeypatch):
    """``--checkpoint.monitor val/rmse`` on a regression: an error, kept at its lowest (the metric says so), where a
    fixed ``max`` would keep the worst epoch."""
    monkeypatch.chdir(tmp_path)
    args = ["fit", *TINY, "--model.task=Regression", *CANVASES, "--data.targets=sum", *QUIET]
    cli = TLKitCLI(args=[*args, "--trainer.max_epochs=3", "--checkpoint.monitor=val/rmse"])
    callback = cli.trainer.checkpoint_callback
    assert callback.mode == "min" and "val_rmse" in Path(callback.best_model_path).name
    logged = EventAccumulator(str(tmp_path / "logs" / "tlkit" / "version_0"))
    logged.Reload()
    values = [event.value for event in logged.Scalars("val/rmse")]
    assert len(values) == 3 and float(callback.best_model_score) == pytest.approx(min(values))
