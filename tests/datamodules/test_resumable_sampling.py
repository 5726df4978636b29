"""Resume is bitwise exact with random augmentation, dropout and DataLoader workers, from end-of-epoch and mid-epoch
checkpoints, for the classification and the domain-adaptation (CombinedLoader) datamodules."""

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from tlkit.datamodules import DigitsDataModule, DigitsMDataModule, EpochShuffleSampler
from tlkit.randomness import SeededIndex
from tlkit.strategies import DANN, FineTuning


def fine_tuning():
    return FineTuning("test_resnet", weights=None, head="mlp", dropout=0.3, lr_decay=0.5)


def digits(workers: int):
    return DigitsDataModule(image_size=32, labels_per_class=8, batch_size=16, num_workers=workers)


def dann():
    return DANN("test_resnet", weights=None, backbone_lr_factor=0.5)


def digits_m(workers: int):
    return DigitsMDataModule(image_size=32, iters_per_epoch=4, batch_size=8, num_workers=workers)


def trainer(root, callbacks=(), max_epochs=2):
    return L.Trainer(
        accelerator="cpu",
        max_epochs=max_epochs,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=list(callbacks),
        default_root_dir=root,
    )


@pytest.mark.parametrize(
    ("make_model", "make_data", "workers"),
    [(fine_tuning, digits, 0), (fine_tuning, digits, 2), (dann, digits_m, 0)],
    ids=["digits", "digits-2-workers", "digits_m-dann"],
)
def test_resume_from_every_checkpoint_is_bitwise_exact(tmp_path, make_model, make_data, workers):
    L.seed_everything(1)
    reference = make_model()
    every_3_steps = ModelCheckpoint(tmp_path / "ckpt", filename="s{step}", save_top_k=-1, every_n_train_steps=3)
    every_epoch = ModelCheckpoint(tmp_path / "ckpt", filename="e{epoch}", save_top_k=-1)
    trainer(tmp_path, [every_3_steps, every_epoch]).fit(reference, datamodule=make_data(workers))
    expected = {k: v.clone() for k, v in reference.state_dict().items()}
    checkpoints = sorted((tmp_path / "ckpt").glob("*.ckpt"))
    assert any(p.name.startswith("s") for p in checkpoints) and any(p.name.startswith("e") for p in checkpoints)
    for path in checkpoints:
        L.seed_everything(123)  # another global seed: the checkpoint's run seed must win
        resumed = make_model()
        trainer(tmp_path / "resumed").fit(resumed, datamodule=make_data(workers), ckpt_path=path)
        difference = max(
            (expected[k].double() - v.double()).abs().max().item() for k, v in resumed.state_dict().items()
        )
        assert difference == 0.0, f"resumed from {path.name}"


def test_sampler_shards_ranks_and_skips_consumed_samples(monkeypatch):
    sampler = EpochShuffleSampler(10, seed=3)
    sampler.set_epoch(2)
    order = sampler.epoch_order()
    assert sorted(order) == list(range(10)) and order != list(range(10))
    whole = list(sampler)
    assert [int(i) for i in whole] == order and all(isinstance(i, SeededIndex) for i in whole)
    assert len({i.seed for i in whole}) == 10
    monkeypatch.setattr("tlkit.datamodules.sampling._world", lambda: (3, 1))
    assert [int(i) for i in sampler] == (order + order[:2])[1::3]  # padded to 12, every 3rd from rank 1
    sampler.skip_next(2)
    assert [int(i) for i in sampler] == (order + order[:2])[1::3][2:]


def test_seeded_index_survives_pickling_and_indexes_tensors():
    import pickle

    index = pickle.loads(pickle.dumps(SeededIndex(4, 99)))
    assert index == 4 and index.seed == 99 and torch.arange(10)[index].item() == 4
