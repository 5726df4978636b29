import math

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from PIL import Image

from tests.conftest import quiet_trainer
from tlkit.callbacks.embedding_projector import DOMAIN_COLOURS
from tlkit.checkpoint import adaptation_of
from tlkit.cli import TLKitCLI
from tlkit.datamodules import DigitsDataModule, DigitsMDataModule
from tlkit.errors import ConfigError
from tlkit.functional import entropy
from tlkit.strategies import CDAN, DANN, MME, SourceOnly

STRATEGIES = {
    "SourceOnly": "none",
    "DANN": "none",
    "CDAN": "none",
    "DAN": "none",
    "DeepCORAL": "none",
    "MCC": "none",
    "SelfTraining": "none",
    "MME": "few",
    "JointTraining": "all",
}


@pytest.mark.parametrize(("strategy", "target_labels"), STRATEGIES.items(), ids=list(STRATEGIES))
def test_each_strategy_fast_dev_runs_through_the_cli(strategy, target_labels, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = TLKitCLI(
        args=[
            "fit",
            f"--model={strategy}",
            "--model.backbone=test_efficientnet",
            "--model.weights=null",
            "--data=DigitsMDataModule",
            "--data.image_size=32",
            "--data.batch_size=8",
            f"--data.target_labels={target_labels}",
            "--trainer.fast_dev_run=true",
        ]
    )
    metrics = cli.trainer.callback_metrics
    assert cli.trainer.global_step == 1
    logged = {"train/loss", "val/source_acc", "val/target_acc", "val/im", "val/snd", "val/bnm", "val/class_ami"}
    assert logged | {"val/pixel_ami"} <= set(metrics)
    if strategy in ("DANN", "CDAN"):
        assert "val/domain_acc" in metrics and "train/grl_lambda" in metrics


def test_cli_checkpoints_domain_adaptation_on_a_label_free_validator(tmp_path, monkeypatch, caplog):
    """One epoch (a quick try) adapts from the first step, without the source-only reference, and says so."""
    monkeypatch.chdir(tmp_path)
    args = ["fit", "--model=DANN", "--model.backbone=test_efficientnet", "--model.weights=null"]
    args += ["--data=DigitsMDataModule", "--data.image_size=32", "--data.iters_per_epoch=2"]
    args += ["--trainer.max_epochs=1", "--trainer.limit_val_batches=2"]
    cli = TLKitCLI(args=args)
    checkpoint = cli.trainer.checkpoint_callback
    assert (checkpoint.monitor, checkpoint.mode) == ("val/safe_im", "max")
    assert checkpoint.best_model_path.endswith(".ckpt") and "val_safe_im" in checkpoint.best_model_path
    assert cli.model.reference_epochs == 0 and cli.model.source_reference is None
    assert "train/adaptation_loss" in cli.trainer.logged_metrics
    assert "adapting from the first epoch, without a source-only reference: trainer.max_epochs (1)" in caplog.text


class RecordLambda(Callback):
    def __init__(self):
        self.by_step = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if "train/grl_lambda" in trainer.callback_metrics and pl_module.adapting:
            self.by_step[trainer.global_step] = float(trainer.callback_metrics["train/grl_lambda"])


def dann_run(tmp_path, ckpt_path=None, checkpoint=None):
    L.seed_everything(0, verbose=False)
    record = RecordLambda()
    model = DANN("test_efficientnet", weights=None)
    data = DigitsMDataModule(image_size=32, batch_size=8, iters_per_epoch=3)
    callbacks = [record] + ([checkpoint] if checkpoint else [])
    trainer = quiet_trainer(
        max_epochs=3,
        limit_val_batches=1,
        callbacks=callbacks,
        default_root_dir=tmp_path,
        enable_checkpointing=checkpoint is not None,
    )
    trainer.fit(model, datamodule=data, ckpt_path=ckpt_path)
    return record.by_step


def test_dann_lambda_continues_after_resume(tmp_path):
    every_epoch = ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="{epoch}", save_top_k=-1, every_n_epochs=1)
    uninterrupted = dann_run(tmp_path / "a", checkpoint=every_epoch)
    resumed = dann_run(tmp_path / "b", ckpt_path=tmp_path / "ckpt" / "epoch=1.ckpt")
    assert sorted(resumed) == [7, 8, 9]
    assert all(resumed[step] == uninterrupted[step] for step in resumed)
    # Epoch 0 is the source-only reference (no adaptation loss, no lambda); the warm-up starts with adaptation.
    assert sorted(uninterrupted) == [4, 5, 6, 7, 8, 9]
    assert uninterrupted[4] == 0.0 < uninterrupted[5] < uninterrupted[7] < uninterrupted[9] < 1.0


class RecordAdapting(Callback):
    def __init__(self):
        self.epochs = {}

    def on_train_epoch_end(self, trainer, pl_module):
        self.epochs[trainer.current_epoch] = pl_module.adapting


def reference_run(max_epochs, reference_epochs="auto", root=None, ckpt_path=None):
    L.seed_everything(0, verbose=False)
    constant = lambda optimizer: torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0)  # noqa: E731
    model = DANN("test_efficientnet", weights=None, reference_epochs=reference_epochs, lr_scheduler=constant)
    data = DigitsMDataModule(image_size=32, batch_size=8, iters_per_epoch=2)
    record = RecordAdapting()
    every_epoch = [ModelCheckpoint(dirpath=root, filename="{epoch}", save_top_k=-1)] if root else []
    trainer = quiet_trainer(
        max_epochs=max_epochs, limit_val_batches=1, callbacks=[record, *every_epoch], enable_checkpointing=bool(root)
    )
    trainer.fit(model, datamodule=data, ckpt_path=ckpt_path)
    return model, record.epochs


@pytest.mark.parametrize(("max_epochs", "expected"), [(4, 2), (3, 1)])
def test_an_auto_reference_trains_enough_steps_within_half_the_run(max_epochs, expected, monkeypatch, caplog):
    """``reference_epochs: auto`` (the default): the fewest epochs of at least REFERENCE_STEPS steps (3 here: two
    epochs of 2), at most half the run's epochs; each one is a source-only epoch recorded as the reference, and the
    run is the one the explicit count trains."""
    monkeypatch.setattr("tlkit.strategies.domain_adaptation.REFERENCE_STEPS", 3)
    model, adapting = reference_run(max_epochs)
    assert model.reference_setting == "auto" and model.reference_epochs == expected
    assert adapting == {epoch: epoch >= expected for epoch in range(max_epochs)}
    references = [row["epoch"] for row in model.adaptation_history if row.get("reference")]
    assert references == [float(epoch) for epoch in range(expected)]
    assert model.source_reference["epoch"] == expected - 1  # the last source-only epoch is the reference
    rule = "at least 3 steps" if expected == 2 else "3 steps would take 2 epochs; at most half the run's 3"
    epochs = f"{expected} epoch{'s' if expected > 1 else ''}"
    assert (
        f"DANN: source-only reference: {epochs} of 2 steps before adapting (model.reference_epochs: auto: {rule})"
        in (caplog.text)
    )
    explicit, _ = reference_run(max_epochs, reference_epochs=expected)
    auto_weights, explicit_weights = model.state_dict(), explicit.state_dict()
    assert all(torch.equal(auto_weights[k], explicit_weights[k]) for k in auto_weights)


def test_a_resumed_run_keeps_the_reference_epochs_it_started_with(tmp_path, monkeypatch):
    """Resumed to more epochs, an ``auto`` run goes on with the count its checkpoint recorded (1, capped at half of
    3 epochs), not the 2 that 6 epochs would resolve to: its adapted epochs stay adapted."""
    monkeypatch.setattr("tlkit.strategies.domain_adaptation.REFERENCE_STEPS", 3)
    first, _ = reference_run(3, root=tmp_path)
    assert first.reference_epochs == 1
    assert adaptation_of(torch.load(tmp_path / "epoch=1.ckpt", weights_only=True)).reference_epochs == 1
    resumed, adapting = reference_run(6, ckpt_path=tmp_path / "epoch=1.ckpt")
    assert resumed.reference_epochs == 1 and adapting == {epoch: True for epoch in range(2, 6)}
    assert reference_run(6)[0].reference_epochs == 2  # what a new run of 6 epochs trains


def test_an_explicit_reference_is_kept_and_a_bad_one_is_one_line():
    model = DANN("test_efficientnet", weights=None, reference_epochs=3)
    assert model.reference_setting == 3 == model.reference_epochs
    for bad in ("two", -1, True, 1.5):
        with pytest.raises(ConfigError, match="reference_epochs.*an integer >= 0 or 'auto'"):
            DANN("test_efficientnet", weights=None, reference_epochs=bad)


def test_embedding_projector_is_written_at_the_end_of_fit(tmp_path):
    model = SourceOnly("test_efficientnet", weights=None)
    data = DigitsMDataModule(image_size=32, batch_size=16, iters_per_epoch=1)
    logger = TensorBoardLogger(tmp_path, name="da")
    quiet_trainer(max_epochs=1, limit_val_batches=1, logger=logger).fit(model, datamodule=data)
    projector = (tmp_path / "da" / "version_0" / "projector_config.pbtxt").read_text()
    assert 'tensor_name: "features' in projector
    metadata = next((tmp_path / "da" / "version_0").rglob("metadata.tsv")).read_text().splitlines()
    assert metadata[0] == "domain\tclass"
    domains = {line.split("\t")[0] for line in metadata[1:]}
    val_sizes = [min(300, len(data.splits[split].labels)) for split in ("source_val", "target_val")]
    assert domains == {"source", "target"} and len(metadata) == 1 + sum(val_sizes)
    # Opened, the projector draws each point as its thumbnail framed in its domain's colour (no "Color by" needed).
    assert "sprite" in projector and "single_image_dim: 32" in projector
    sprite = np.asarray(Image.open(next((tmp_path / "da" / "version_0").rglob("sprite.png"))).convert("RGB"))
    per_row = math.ceil(math.sqrt(len(metadata) - 1))
    last = len(metadata) - 2
    first_frame = sprite[1, 1] / 255
    last_frame = sprite[32 * (last // per_row) + 1, 32 * (last % per_row) + 1] / 255
    assert np.allclose(first_frame, DOMAIN_COLOURS["source"], atol=0.01)
    assert np.allclose(last_frame, DOMAIN_COLOURS["target"], atol=0.01)


def test_cdan_uses_the_randomized_map_only_when_the_outer_product_is_large():
    small = CDAN("test_efficientnet", weights=None, num_classes=10, randomized_dim=4096)  # 256 x 10 = 2560
    large = CDAN("test_efficientnet", weights=None, num_classes=10, randomized_dim=1024)
    assert not small.randomized and small.discriminator[0].in_features == 2560
    assert large.randomized and large.discriminator[0].in_features == 1024
    features, logits = torch.randn(4, 256), torch.randn(4, 10)
    assert large.discriminator_input(features, logits).shape == (4, 1024)
    outer = small.discriminator_input(features, logits)
    expected = torch.einsum("nc,nf->ncf", logits.softmax(1), features).flatten(1)
    assert torch.allclose(outer, expected)


@pytest.mark.parametrize(
    ("model", "data", "match"),
    [
        (
            lambda: MME("test_efficientnet", weights=None),
            lambda: DigitsMDataModule(image_size=32),
            r"target_labels.*'few'",
        ),
        (lambda: DANN("test_efficientnet", weights=None), lambda: DigitsDataModule(image_size=32), r"DomainDataModule"),
        (lambda: DANN("test_efficientnet", weights=None, trade_off=-1), None, r"`trade_off` to be a number >= 0"),
    ],
)
def test_bad_domain_adaptation_setups(model, data, match):
    with pytest.raises(ConfigError, match=match):
        quiet_trainer(fast_dev_run=True).fit(model(), datamodule=data())


@pytest.mark.parametrize("alignment", [True, False])
def test_self_training_tracks_target_predictions_for_distribution_alignment(alignment):
    from tlkit.strategies import SelfTraining

    model = SelfTraining("test_efficientnet", weights=None, distribution_alignment=alignment)
    data = DigitsMDataModule(image_size=32, batch_size=8, iters_per_epoch=3)
    quiet_trainer(max_epochs=1, limit_val_batches=1, num_sanity_val_steps=0).fit(model, datamodule=data)
    mean = model.state_dict()["target_prediction_mean"]
    assert mean.shape == (10,) and mean.sum().item() == pytest.approx(1.0, abs=1e-5)
    assert torch.equal(mean, torch.full((10,), 0.1)) != alignment  # moved only when aligning


def test_mme_backbone_pushes_back_at_full_strength_from_the_first_step():
    """Minimax entropy: the classifier's gradient on -H and the backbone's are exact opposites at step 0 already
    (no warm-up of the reversal), and the head is the cosine classifier, built once."""
    from tlkit.strategies.mme import CosineClassifier

    model = MME("test_efficientnet", weights=None, num_classes=10)
    assert isinstance(model.head, CosineClassifier)
    target = torch.randn(6, model.backbone.num_features, requires_grad=True)
    model.adaptation_loss(None, target, None, None).backward()
    reversed_grad = target.grad.clone()
    target.grad = None
    (-entropy(model.head(target))).backward()
    assert reversed_grad.abs().sum() > 0
    assert torch.allclose(reversed_grad, -target.grad)


def test_cdan_entropy_conditioning_weighs_confident_examples_up():
    model = CDAN("test_efficientnet", weights=None, num_classes=3, entropy_conditioning=True)
    domain_logits = torch.zeros(4, 1)  # the discriminator is unsure everywhere: every row's loss is log 2
    confident, unsure = torch.tensor([[20.0, 0, 0]]), torch.zeros(1, 3)
    logits = torch.cat([confident, unsure, confident, unsure])
    assert model.domain_loss(domain_logits, logits, n_source=2).item() == pytest.approx(math.log(2), rel=1e-5)
    # Source row 0 is confident: moving only its discriminator logit towards "source" lowers the loss more than
    # moving the unsure row 1's by the same amount.
    better_confident = model.domain_loss(torch.tensor([[2.0], [0.0], [0.0], [0.0]]), logits, n_source=2)
    better_unsure = model.domain_loss(torch.tensor([[0.0], [2.0], [0.0], [0.0]]), logits, n_source=2)
    assert better_confident < better_unsure
