"""Hugging Face datasets as users keep them: a DatasetDict saved by `datasets`, Parquet written by `datasets` and by
pandas (images as bytes), read through the datamodules and the `tlkit` command, offline."""

from __future__ import annotations

import io
import json

import pytest

from tests._console import TINY_IMAGE_MODEL, run_here, run_here_captured, shipped
from tests._hf_data import NAMES, save_digit_dataset
from tlkit.checkpoint import read_checkpoint
from tlkit.datamodules import HuggingFaceImageDataModule, HuggingFaceTextDataModule
from tlkit.datamodules.digits import digit_images
from tlkit.errors import ConfigError
from tlkit.features import data_fingerprint

datasets = pytest.importorskip("datasets")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hf") / "digits"
    return folder, save_digit_dataset(folder)


def test_a_saved_dataset_keeps_its_class_label_order_splits_and_records_where_it_came_from(saved):
    folder, data = saved
    dm = HuggingFaceImageDataModule(str(folder), image_size=16, test_fraction=0.2)
    dm.setup("fit")
    assert dm.classes == NAMES
    assert len(dm.splits["val"].labels) == 15  # the dataset's own validation split, not held out of train
    assert len(dm.splits["train"].labels) + len(dm.splits["test"].labels) == 45
    for split in ("train", "val"):
        rows = dm.splits[split].samples
        table = data["train" if split == "train" else "validation"]
        assert dm.splits[split].labels == [table[r.row]["label"] for r in rows]
    image, label = dm.dataset("val", train=False)[0]
    assert image.shape == (3, 16, 16) and label == data["validation"][0]["label"]
    record = dm.data_source()
    assert record["path"] == str(folder) and record["splits"] == {"train": "train", "val": "validation"}
    assert record["fingerprints"]["train"] == datasets.load_from_disk(str(folder))["train"]._fingerprint


def test_label_sets_and_numbers_come_from_list_and_value_features(saved):
    folder, data = saved
    labels = HuggingFaceImageDataModule(str(folder), multi_label=True, label_column="tags", image_size=16)
    labels.setup("fit")
    assert labels.classes == ["even", "odd", "small"] and labels.target_kind == "labels"
    first = labels.splits["val"]
    assert first.labels[0].tolist() == [float(i in data["validation"][first.samples[0].row]["tags"]) for i in range(3)]
    numbers = HuggingFaceImageDataModule(str(folder), target_columns=["value"], image_size=16)
    numbers.setup("fit")
    assert numbers.target_kind == "values"
    assert [float(v[0]) for v in numbers.splits["val"].labels] == data["validation"]["value"]


def test_a_parquet_file_pandas_wrote_with_image_bytes_and_integer_labels(tmp_path):
    pandas = pytest.importorskip("pandas")
    images, labels = digit_images()
    picked = [i for i, label in enumerate(labels) if label < 3][:30]

    def png(image):
        buffer = io.BytesIO()
        image.resize((16, 16)).save(buffer, format="PNG")
        return buffer.getvalue()

    frame = pandas.DataFrame({"picture": [png(images[i]) for i in picked], "digit": [int(labels[i]) for i in picked]})
    frame.to_parquet(tmp_path / "digits.parquet")
    path = str(tmp_path / "digits.parquet")
    with pytest.raises(ConfigError, match=r"holds numbers \(Value\('int64'\)\): list the class names in `classes`"):
        HuggingFaceImageDataModule(path, image_column="picture", label_column="digit").setup("fit")
    dm = HuggingFaceImageDataModule(path, image_column="picture", label_column="digit", classes=["a", "b", "c"])
    dm.setup("fit")
    assert dm.classes == ["a", "b", "c"]
    train = dm.splits["train"]
    assert train.labels == [int(labels[picked[r.row]]) for r in train.samples]  # number i is classes[i]
    assert dm.load_image(train.samples[0]).size == (16, 16)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            {"label_column": "lable"},
            r"`label_column` 'lable' to be a column of '.*digits' split 'train', but its columns are 'image', "
            r"'label', 'tags', 'value'. Closest: label",
        ),
        ({"splits": {"val": "valid"}}, r"`splits.val` 'valid' to be a split of .*, but its splits are 'train', "),
        ({"label_column": "tags"}, r"holds lists .*: set `multi_label: true`"),
        ({"image_column": "value"}, r"`image_column` 'value' .* to hold images .* but its feature is Value"),
        ({"classes": ["a", "b", "c"]}, r"`classes` to be unset or the names of .* \(zero, one, two\)"),
    ],
)
def test_bad_columns_and_splits_are_one_line_naming_them(saved, arguments, message):
    folder, _ = saved
    with pytest.raises(ConfigError, match=message) as error:
        HuggingFaceImageDataModule(str(folder), **arguments).setup("fit")
    assert "\n" not in str(error.value)


def test_rows_without_a_label_and_unknown_paths_are_named(tmp_path):
    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["a", "b"])})
    data = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict(
                {"text": ["x y", "y z", "z x", "x x"], "label": [0, 1, 0, 1]}, features
            ),
            "test": datasets.Dataset.from_dict({"text": ["q", "r"], "label": [-1, -1]}, features),
        }
    )
    data.save_to_disk(str(tmp_path / "texts"))
    with pytest.raises(ConfigError, match=r"split 'test' row 0 has -1 .* `splits: \{<split>: null\}`"):
        HuggingFaceTextDataModule(str(tmp_path / "texts"), val_fraction=0.25).setup("fit")
    dm = HuggingFaceTextDataModule(
        str(tmp_path / "texts"), splits={"test": None}, val_fraction=0.25, test_fraction=0.25
    )
    dm.setup("fit")
    assert sorted(dm.splits["train"].samples + dm.splits["val"].samples + dm.splits["test"].samples) == sorted(
        data["train"]["text"]
    )
    missing = str(tmp_path / "no" / "such-dataset")
    with pytest.raises(ConfigError, match=r"`path` '.*such-dataset' to be a dataset folder or file, but .* does not"):
        HuggingFaceTextDataModule(missing).setup("fit")


def test_the_feature_cache_tells_rows_of_different_data_apart(saved, tmp_path):
    folder, data = saved
    changed = data["train"].map(lambda row: {"value": row["value"] + 1.0})
    changed.save_to_disk(str(tmp_path / "changed"))
    ours = HuggingFaceImageDataModule(str(folder))
    theirs = HuggingFaceImageDataModule(str(tmp_path / "changed"), val_fraction=0.25)
    ours.setup("fit"), theirs.setup("fit")
    rows = ours.splits["train"].samples[:3]
    other = [type(r)(r.split, theirs.splits["train"].samples[0].table_fingerprint, r.row) for r in rows]
    assert data_fingerprint(rows, [0, 0, 0]) != data_fingerprint(other, [0, 0, 0])
    assert data_fingerprint(rows, [0, 0, 0]) == data_fingerprint(list(rows), [0, 0, 0])


def test_the_shipped_config_fits_and_predicts_a_saved_dataset_with_its_record(saved, tmp_path, capfd):
    folder, _ = saved
    config = [*shipped("hf_image_finetune.yaml"), *TINY_IMAGE_MODEL]
    options = [
        f"--data.path={folder}",
        "--data.revision=null",
        "--data.label_column=label",
        "--data.splits={train: train, val: validation}",
        "--data.num_workers=0",
        "--trainer.max_epochs=1",
        "--trainer.enable_model_summary=false",
    ]
    run_here([*config, *options], tmp_path)
    checkpoint = next(tmp_path.glob("logs/hf_image_finetune/version_0/checkpoints/last.ckpt"))
    info = read_checkpoint(checkpoint).info
    assert info.class_names == tuple(NAMES)
    assert info.data_source["path"] == str(folder) and info.data_source["splits"]["val"] == "validation"
    predict = [
        "predict",
        "--config",
        str(tmp_path / checkpoint.parents[1] / "config.yaml"),
        f"--ckpt_path={checkpoint}",
    ]
    result = run_here_captured(predict, tmp_path, capfd)
    assert result.returncode == 0, result.stderr
    written = next(tmp_path.glob("logs/hf_image_finetune/version_0/predictions/*.jsonl")).read_text().splitlines()
    names = [json.loads(line)["file"] for line in written]
    assert names and all(name.startswith("train/") for name in names)  # the dataset's split and row


def test_a_saved_text_dataset_reads_its_texts_in_its_class_order(tmp_path):
    features = datasets.Features(
        {"sentence": datasets.Value("string"), "label": datasets.ClassLabel(names=["pos", "neg"])}
    )
    texts = ["good", "bad", "great", "awful"] * 3
    data = datasets.Dataset.from_dict({"sentence": texts, "label": [0, 1] * 6}, features)
    data.save_to_disk(str(tmp_path / "single"))  # one Dataset, not a DatasetDict: its split is train
    dm = HuggingFaceTextDataModule(str(tmp_path / "single"), text_column="sentence")
    dm.setup("fit")
    assert dm.classes == ["pos", "neg"]
    for split in dm.splits.values():
        assert all(label == (0 if text in ("good", "great") else 1) for text, label in zip(split.samples, split.labels))
