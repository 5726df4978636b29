import shutil
from collections import Counter

import pytest
import torch

from tests.conftest import write_image_folder
from tlkit.backbones import DataConfig
from tlkit.datamodules import DigitsDataModule, ImageFolderDataModule
from tlkit.errors import ConfigError


def test_digits_splits_are_disjoint_stratified_and_seeded():
    dm = DigitsDataModule(seed=3)
    dm.setup("fit")
    sizes = {name: len(split.labels) for name, split in dm.splits.items()}
    assert sum(sizes.values()) == 1797
    assert dm.num_classes == 10
    assert set(Counter(dm.splits["test"].labels)) == set(range(10))
    ids = {name: {id(s) for s in split.samples} for name, split in dm.splits.items()}
    assert not ids["train"] & ids["val"] and not ids["train"] & ids["test"] and not ids["val"] & ids["test"]
    again = DigitsDataModule(seed=3)
    again.setup("fit")
    assert again.splits["val"].labels == dm.splits["val"].labels


@pytest.mark.parametrize(
    ("option", "expected_per_class"), [({"labels_per_class": 7}, 7), ({"train_fraction": 0.1}, None)]
)
def test_limited_labels(option, expected_per_class):
    full = DigitsDataModule()
    full.setup()
    dm = DigitsDataModule(**option)
    dm.setup()
    counts = Counter(dm.splits["train"].labels)
    if expected_per_class:
        assert set(counts.values()) == {expected_per_class}
    else:
        full_counts = Counter(full.splits["train"].labels)
        assert all(abs(counts[c] - 0.1 * full_counts[c]) <= 1 for c in range(10))
    assert dm.splits["test"].labels == full.splits["test"].labels  # limiting labels never touches evaluation data


def test_batches_follow_the_data_config():
    dm = DigitsDataModule(image_size=40, batch_size=5, augment=True)
    dm.data_config = DataConfig(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    dm.setup()
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (5, 3, 40, 40) and y.shape == (5,)
    x, _ = next(iter(dm.val_dataloader()))
    assert x.min() >= -2.0 - 1e-6 and x.max() <= 2.0 + 1e-6  # (0 - 0.5) / 0.25 .. (1 - 0.5) / 0.25


def test_image_folder_single_folder_split(image_folder):
    dm = ImageFolderDataModule(str(image_folder), val_fraction=0.25, test_fraction=0.25, image_size=16)
    dm.setup()
    assert dm.classes == ["0", "1", "2"]
    assert [len(dm.splits[s].labels) for s in ("train", "val", "test")] == [18, 9, 9]
    x, y = next(iter(dm.test_dataloader()))
    assert x.shape[1:] == (3, 16, 16)


def test_image_folder_train_val_test_layout(tmp_path):
    for split in ("train", "val", "test"):
        write_image_folder(tmp_path / split, per_class=4)
    dm = ImageFolderDataModule(str(tmp_path), labels_per_class=2, image_size=16)
    dm.setup()
    assert [len(dm.splits[s].labels) for s in ("train", "val", "test")] == [6, 12, 12]
    assert all(str(p).startswith(str(tmp_path / "val")) for p in dm.splits["val"].samples)


def _missing(root):
    return root / "nowhere"


def _no_classes(root):
    (root / "flat").mkdir()
    return root / "flat"


def _empty_class(root):
    (root / "images" / "3").mkdir()
    return root / "images"


def _non_image(root):
    (root / "images" / "1" / "notes.txt").write_text("not a picture")
    return root / "images"


def _truncated(root):
    path = root / "images" / "2" / "0.png"
    path.write_bytes(path.read_bytes()[:60])
    return root / "images"


def _class_mismatch(root):
    shutil.copytree(root / "images", root / "split" / "train")
    write_image_folder(root / "split" / "val", classes=("0", "1", "7"), per_class=2)
    return root / "split"


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (_missing, r"data folder '.*nowhere' to exist"),
        (_no_classes, r"'.*flat' to contain one sub-folder per class"),
        (_empty_class, r"class folder '.*images/3' to contain images"),
        (_non_image, r"'.*notes.txt' is not an image file"),
        (_truncated, r"'.*images/2/0.png' is unreadable or truncated"),
        (
            _class_mismatch,
            r"'.*split/val' to have the same class folders.*only in train: \['2'\]; only in val: \['7'\]",
        ),
    ],
)
def test_bad_data_fails_before_training(tmp_path, image_folder, make, match):
    dm = ImageFolderDataModule(str(make(tmp_path)))
    with pytest.raises(ConfigError, match=match):
        dm.setup("fit")


def test_invalid_files_can_be_skipped_with_a_warning(tmp_path, image_folder):
    _non_image(tmp_path)
    _truncated(tmp_path)
    dm = ImageFolderDataModule(str(image_folder), on_invalid="skip")
    with pytest.warns(UserWarning, match=r"Skipped 2 unusable file\(s\): .*0.png.*notes.txt|notes.txt.*0.png"):
        dm.setup()
    assert sum(len(s.labels) for s in dm.splits.values()) == 35


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"persistent_workers": True}, r"`persistent_workers` to be false when num_workers is 0"),
        ({"val_fraction": 0.6, "test_fraction": 0.5}, r"`val_fraction \+ test_fraction` to be below 1"),
        ({"labels_per_class": 2, "train_fraction": 0.5}, r"`labels_per_class` to be unset when train_fraction is set"),
        ({"labels_per_class": 500}, r"at most the smallest class's training size, but got 500 while class '\d'"),
    ],
)
def test_bad_datamodule_arguments(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        DigitsDataModule(**kwargs).setup()


def test_transforms_come_from_the_attached_backbone():
    from tests.conftest import quiet_trainer
    from tlkit.strategies import FeatureExtraction

    model = FeatureExtraction("test_vit", weights=None, cache_features="off")  # images, not cached features
    dm = DigitsDataModule(image_size=None, batch_size=4, labels_per_class=1, augment=False)
    trainer = quiet_trainer(max_steps=1, limit_val_batches=1)
    trainer.fit(model, dm)
    x, _ = next(iter(dm.train_dataloader()))
    assert x.shape[-1] == model.backbone.data_config.image_size == 160
    assert torch.isfinite(x).all()
