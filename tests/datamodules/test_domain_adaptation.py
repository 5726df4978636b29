import numpy as np
import pytest
import torch

from tests.conftest import write_image_folder
from tlkit.datamodules import DigitsMDataModule, DomainAdaptationDataModule
from tlkit.errors import ConfigError


def pixels(image):
    return np.asarray(image)


def test_digits_m_is_deterministic_by_seed_and_shifted():
    a, b, c = (
        DigitsMDataModule(image_size=32, seed=1),
        DigitsMDataModule(image_size=32, seed=1),
        DigitsMDataModule(image_size=32, seed=2),
    )
    _, source, target = a.load_domains()
    _, _, same = b.load_domains()
    _, _, other = c.load_domains()
    assert all(np.array_equal(pixels(x), pixels(y)) for x, y in zip(target.samples[:50], same.samples[:50]))
    assert not np.array_equal(pixels(target.samples[0]), pixels(other.samples[0]))
    assert target.labels == source.labels and len(target.labels) == 1797
    # The target is colourful (channels differ); the source digits are grey.
    assert pixels(target.samples[0]).std(axis=2).mean() > 1.0
    assert pixels(source.samples[0]).std(axis=2).mean() == 0.0


def test_splits_are_disjoint_and_target_test_is_held_out():
    dm = DigitsMDataModule(image_size=32, target_labels="few", shots=2)
    dm.setup()
    ids = {name: {id(s) for s in split.samples} for name, split in dm.splits.items()}
    assert not ids["target_train"] & ids["target_val"] and not ids["target_train"] & ids["target_test"]
    assert not ids["target_val"] & ids["target_test"]
    assert ids["target_labeled"] <= ids["target_train"]
    assert sorted(dm.splits["target_labeled"].labels) == sorted(list(range(10)) * 2)
    assert sum(len(dm.splits[s].labels) for s in ("target_train", "target_val", "target_test")) == 1797


@pytest.mark.parametrize(("iters", "expected"), [(7, 7), ("max", 1618 // 16), ("min", 1079 // 16)])
def test_epoch_length_is_explicit(iters, expected):
    dm = DigitsMDataModule(image_size=16, iters_per_epoch=iters, batch_size=16, augment=False)
    dm.setup()
    loader = dm.train_dataloader()
    iter(loader)
    assert len(loader) == expected == dm.steps_per_epoch


def test_training_batches_hide_target_labels():
    dm = DigitsMDataModule(image_size=16, iters_per_epoch=2, batch_size=4, target_labels="few", shots=1)
    dm.setup()
    batch, _, _ = next(iter(dm.train_dataloader()))
    assert set(batch) == {"source", "target", "target_labeled"}
    assert isinstance(batch["target"], torch.Tensor) and batch["target"].shape == (4, 3, 16, 16)
    assert len(batch["source"]) == 2 and len(batch["target_labeled"]) == 2


def test_folder_layout_with_root_and_domain_names(tmp_path):
    write_image_folder(tmp_path / "office" / "amazon", per_class=10)
    write_image_folder(tmp_path / "office" / "webcam", per_class=10)
    dm = DomainAdaptationDataModule(root=str(tmp_path / "office"), source_dir="amazon", target_dir="webcam")
    dm.setup()
    assert dm.classes == ["0", "1", "2"] and dm.num_classes == 3
    assert all("webcam" in str(p) for p in dm.splits["target_test"].samples)


@pytest.mark.parametrize(
    ("target_classes", "match"),
    [
        (("0", "1", "5"), r"same class folders.*only in amazon: \['2'\]; only in webcam: \['5'\]"),
        (None, r"data folder '.*webcam' to exist"),
    ],
)
def test_bad_domain_folders(tmp_path, target_classes, match):
    write_image_folder(tmp_path / "amazon", per_class=4)
    if target_classes:
        write_image_folder(tmp_path / "webcam", classes=target_classes, per_class=4)
    dm = DomainAdaptationDataModule(root=str(tmp_path), source_dir="amazon", target_dir="webcam")
    with pytest.raises(ConfigError, match=match):
        dm.setup()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"target_labels": "some"}, r"`target_labels` to be 'none', 'few' or 'all', but got 'some'"),
        ({"iters_per_epoch": 0}, r"`iters_per_epoch` to be an integer >= 1, 'max' or 'min', but got 0"),
        ({"shots": 0}, r"`shots` to be an integer >= 1"),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, r"`val_fraction \+ test_fraction` to be below 1"),
        ({"val_fraction": -0.1}, r"`val_fraction` to be in \[0, 1\)"),
        ({"persistent_workers": True}, r"`persistent_workers` to be false when num_workers is 0"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        DigitsMDataModule(**kwargs)


def test_no_validation_split_with_val_fraction_zero():
    """The same rule as the classification datamodules: 0 holds nothing out for validation."""
    dm = DigitsMDataModule(image_size=16, val_fraction=0.0, num_workers=1, persistent_workers=True)
    dm.setup()
    assert len(dm.splits["source_val"].labels) == len(dm.splits["target_val"].labels) == 0
    assert len(dm.splits["source_train"].labels) == 1797
    assert dm.train_dataloader().iterables["source"].persistent_workers
