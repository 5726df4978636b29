"""Probabilities you can trust: `test` reports the expected calibration error (15 bins), and temperature scaling
(Guo et al., 2017), fitted on the validation predictions, is kept in every checkpoint and applied by `predict`,
`test` and the exported model; older checkpoints load with no temperature (1)."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime
import pytest
import torch
from torchmetrics.classification import MulticlassCalibrationError

from tests.conftest import TINY_FIT_ARGS
from tlkit.cli import TLKitCLI
from tlkit.engines.export import export, load_strategy
from tlkit.engines.preprocessing import preprocess, verification_images
from tlkit.errors import ConfigError
from tlkit.functional import fit_temperature
from tlkit.strategies import DANN, FineTuning


def overconfident(scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits whose labels are drawn from their own softmax, multiplied by ``scale`` (> 1: overconfident)."""
    torch.manual_seed(0)
    logits = torch.randn(4000, 10) * 2
    labels = torch.distributions.Categorical(logits=logits).sample()
    return logits * scale, labels


def ece(logits: torch.Tensor, labels: torch.Tensor) -> float:
    metric = MulticlassCalibrationError(10, n_bins=15, norm="l1")
    metric.update(logits.softmax(dim=1), labels)
    return float(metric.compute())


def test_the_fitted_temperature_undoes_overconfidence_and_leaves_accuracy():
    logits, labels = overconfident(3.0)
    temperature = fit_temperature(logits, labels)
    assert temperature == pytest.approx(3.0, rel=0.05)
    assert ece(logits / temperature, labels) < ece(logits, labels) / 4
    assert torch.equal((logits / temperature).argmax(1), logits.argmax(1))
    calibrated, labels = overconfident(1.0)
    assert fit_temperature(calibrated, labels) == pytest.approx(1.0, rel=0.05)


@pytest.fixture(scope="module")
def calibrated_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("calibrated")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        TLKitCLI(args=["fit", *TINY_FIT_ARGS, "--model.temperature_scaling=true"])
    return folder, folder / "logs" / "tlkit" / "version_0" / "checkpoints" / "last.ckpt"


def test_each_checkpoint_keeps_the_temperature_fitted_on_its_validation(calibrated_run):
    _, last = calibrated_run
    temperature = float(torch.load(last, weights_only=True)["state_dict"]["calibration_temperature"])
    assert temperature > 0 and temperature != 1.0
    assert float(load_strategy(last).calibration_temperature) == temperature


def test_test_reports_the_calibration_error_with_and_without_the_temperature(calibrated_run, monkeypatch):
    folder, last = calibrated_run
    monkeypatch.chdir(folder)
    cli = TLKitCLI(args=["test", "--ckpt_path", str(last), "--trainer.enable_progress_bar=false"])
    logged = cli.trainer.callback_metrics
    assert 0.0 <= float(logged["test/ece"]) <= 1.0 and 0.0 <= float(logged["test/ece_unscaled"]) <= 1.0
    assert float(logged["test/ece"]) != float(logged["test/ece_unscaled"])


def test_predict_and_the_exported_model_apply_the_temperature(calibrated_run, tmp_path):
    _, last = calibrated_run
    model = load_strategy(last).eval()
    temperature = float(model.calibration_temperature)
    report = export(last, tmp_path / "out", formats=["onnx"])
    spec = json.loads((tmp_path / "out" / "model.json").read_text())
    assert spec["temperature"] == pytest.approx(temperature)
    images = verification_images(limit=4)[:4]
    pixels = np.stack([preprocess(image, spec["preprocessing"]) for image in images])
    session = onnxruntime.InferenceSession(str(report.files["onnx"]))
    exported = session.run(None, {"images": pixels})[0]
    with torch.no_grad():
        logits = model(torch.from_numpy(pixels))
        predicted = model.predict_step(torch.from_numpy(pixels), 0)
    expected = (logits.double() / temperature).softmax(dim=1).float()
    torch.testing.assert_close(predicted, expected, atol=1e-6, rtol=0)
    np.testing.assert_allclose(exported, expected.numpy(), atol=1e-4)
    assert not np.allclose(exported, logits.softmax(dim=1).numpy(), atol=1e-4)  # the temperature made a difference


def test_a_checkpoint_from_before_temperature_scaling_loads_with_none(calibrated_run, tmp_path):
    _, last = calibrated_run
    contents = torch.load(last, weights_only=True)
    del contents["state_dict"]["calibration_temperature"]
    torch.save(contents, tmp_path / "old.ckpt")
    assert float(load_strategy(tmp_path / "old.ckpt").calibration_temperature) == 1.0


def test_a_strategy_without_labelled_validation_refuses_temperature_scaling():
    with pytest.raises(ConfigError, match=r"`temperature_scaling` to be false for DANN.*has none to fit it on"):
        DANN("test_resnet", weights=None, temperature_scaling=True)
    assert FineTuning("test_resnet", weights=None).calibration_temperature == 1.0
