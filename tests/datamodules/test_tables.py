"""Images and texts listed in tables with a class, a set of labels or numbers per row, and every bad row one line
naming the file and line before training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tlkit.datamodules import ImageTableDataModule, MultiDigitsDataModule, TextFileDataModule
from tlkit.datamodules.multi_digits import compose_canvases, digit_pixels
from tlkit.errors import ConfigError


def write_canvases(folder: Path, count: int = 24) -> list[tuple[str, list[int]]]:
    """``count`` real multi-digit canvases as PNG files in ``folder``: (file name, the digits drawn)."""
    pixels, labels = digit_pixels()
    images, drawn = compose_canvases(pixels, labels, count, seed=0)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (image, digits) in enumerate(zip(images, drawn)):
        image.save(folder / f"canvas{i}.png")
        rows.append((f"canvas{i}.png", digits))
    return rows


@pytest.fixture
def canvas_table(tmp_path) -> Path:
    rows = write_canvases(tmp_path / "images")
    lines = ["image,digits,digit_sum"]
    lines += [f"images/{name},{';'.join(map(str, sorted(set(d))))},{sum(d)}" for name, d in rows]
    (tmp_path / "train.csv").write_text("\n".join(lines) + "\n")
    return tmp_path / "train.csv"


def test_an_image_table_serves_label_sets_as_multi_hot_vectors(canvas_table):
    dm = ImageTableDataModule(str(canvas_table), label_column="digits", multi_label=True, val_fraction=0.2)
    dm.setup()
    assert dm.target_kind == "labels" and dm.class_names() == [str(d) for d in range(10)]
    assert sum(len(s.labels) for s in dm.splits.values()) == 24  # held out at random, none lost
    first = canvas_table.read_text().splitlines()[1].split(",")
    pool = dm.splits["train"].samples + dm.splits["val"].samples + dm.splits["test"].samples
    position = [p.name for p in pool].index(Path(first[0]).name)
    labels = (dm.splits["train"].labels + dm.splits["val"].labels + dm.splits["test"].labels)[position]
    assert [str(i) for i in np.flatnonzero(labels)] == first[1].split(";")
    assert dm.training_targets().shape == (len(dm.splits["train"].labels), 10)


def test_an_image_table_serves_numbers_for_regression(canvas_table):
    dm = ImageTableDataModule(str(canvas_table), target_columns=["digit_sum"], train_fraction=0.5)
    dm.setup()
    assert dm.target_kind == "values" and dm.class_names() == ["digit_sum"] and dm.num_classes == 1
    targets = dm.training_targets()
    assert targets.shape[1] == 1 and targets.min() >= 0 and targets.max() <= 36


def test_labels_per_class_keeps_enough_images_for_every_label(canvas_table):
    dm = ImageTableDataModule(str(canvas_table), label_column="digits", multi_label=True, labels_per_class=1)
    dm.setup()
    kept = dm.training_targets()
    whole = np.stack(
        ImageTableDataModule(str(canvas_table), label_column="digits", multi_label=True)
        .load_splits()[1]["train"]
        .labels
    )
    present = whole.sum(axis=0) > 0
    assert (kept.sum(axis=0)[present] >= 1).all() and len(kept) < len(whole)


def bad_table(tmp_path: Path, canvas_table: Path, change) -> Path:
    lines = canvas_table.read_text().splitlines()
    lines[3] = change(lines[3])
    path = tmp_path / "bad.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(
    "change, arguments, message",
    [
        (
            lambda row: row.rsplit(",", 1)[0] + ",many",
            {"target_columns": ["digit_sum"]},
            r"Expected a number in target column 'digit_sum' of every row, but .*bad\.csv:4 has 'many'",
        ),
        (
            lambda row: row.rsplit(",", 1)[0] + ",nan",
            {"target_columns": ["digit_sum"]},
            r"finite number .*bad\.csv:4 has 'nan'",
        ),
        (
            lambda row: row.rsplit(",", 1)[0] + ",inf",
            {"target_columns": ["digit_sum"]},
            r"finite number .*bad\.csv:4 has 'inf'",
        ),
        (
            lambda row: row.rsplit(",", 1)[0] + ",",
            {"target_columns": ["digit_sum"]},
            r"a number in target column 'digit_sum' .*bad\.csv:4 has none",
        ),
        (
            lambda row: row.split(",")[0] + ",,3",
            {"label_column": "digits", "multi_label": True},
            r"at least one label in `digits` of every row, but .*bad\.csv:4 has none",
        ),
        (
            lambda row: row.split(",")[0] + ",3;x,3",
            {"label_column": "digits", "multi_label": True, "classes": [str(d) for d in range(10)]},
            r"one of the classes \(0, 1, .*\), but .*bad\.csv:4 has 'x'",
        ),
        (
            lambda row: "images/missing.png," + row.split(",", 1)[1],
            {"label_column": "digits", "multi_label": True},
            r"the image 'images/missing.png' of .*bad\.csv:4 to exist",
        ),
        (
            lambda row: row,
            {"target_columns": ["sum"]},
            r"`target_columns\[0\]` 'sum' to be a column of .*bad\.csv.*Closest: digit_sum",
        ),
        (
            lambda row: row,
            {"target_columns": ["digit_sum"], "labels_per_class": 2},
            r"`labels_per_class` to be unset for numeric targets",
        ),
    ],
)
def test_a_bad_row_is_one_line_naming_the_file_line_and_column(tmp_path, canvas_table, change, arguments, message):
    dm = ImageTableDataModule(str(bad_table(tmp_path, canvas_table, change)), **arguments)
    with pytest.raises(ConfigError, match=message) as caught:
        dm.setup()
    assert "\n" not in str(caught.value)


def test_target_columns_and_multi_label_are_one_or_the_other(canvas_table):
    with pytest.raises(ConfigError, match=r"`multi_label` to be false with `target_columns`"):
        ImageTableDataModule(str(canvas_table), target_columns=["digit_sum"], multi_label=True)


def test_a_text_table_reads_label_lists_separated_labels_and_numbers(tmp_path):
    rows = [
        {"text": "a sunny beach day", "tags": ["summer", "sea"], "stars": 4.5},
        {"text": "snow on the peaks", "tags": ["winter"], "stars": 3},
        {"text": "waves in winter", "tags": "winter;sea", "stars": "2"},
    ] * 4
    path = tmp_path / "posts.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    dm = TextFileDataModule(str(path), label_column="tags", multi_label=True, val_fraction=0.25, test_fraction=0.25)
    classes, splits = dm.load_data()
    assert classes == ["sea", "summer", "winter"]
    assert [list(v) for v in splits["train"].labels[:3]] == [[1, 1, 0], [0, 0, 1], [1, 0, 1]]
    dm = TextFileDataModule(str(path), target_columns=["stars"])
    classes, splits = dm.load_data()
    assert classes == ["stars"] and [float(v[0]) for v in splits["train"].labels[:3]] == [4.5, 3.0, 2.0]
    folder = tmp_path / "by_class"
    (folder / "pos").mkdir(parents=True)
    (folder / "pos" / "a.txt").write_text("fine")
    with pytest.raises(ConfigError, match="Expected a table file for numeric targets"):
        TextFileDataModule(str(folder), target_columns=["stars"]).load_data()


def test_the_bundled_canvases_split_three_ways_with_real_sums_and_the_same_on_every_run():
    dm = MultiDigitsDataModule(targets="sum", num_images=200)
    dm.setup()
    sizes = {name: len(split.labels) for name, split in dm.splits.items()}
    assert sizes["train"] > sizes["test"] > 0 and sizes["val"] > 0 and sum(sizes.values()) == pytest.approx(200, abs=2)
    sums = np.concatenate([dm.training_targets()[:, 0]])
    assert sums.min() >= 0 and sums.max() <= 36 and len(set(sums.tolist())) > 10  # a spread of real sums
    again = MultiDigitsDataModule(targets="sum", num_images=200)
    again.setup()
    assert np.array_equal(np.asarray(dm.splits["test"].samples[0]), np.asarray(again.splits["test"].samples[0]))


def test_a_misspelt_label_in_an_image_table_is_named_with_its_row(tmp_path, recwarn):
    """With no ``classes``, every name found becomes an output: one that a single row has ('kat') is named, with
    the row, in one warning (a misspelling made into a class of its own)."""
    rows = write_canvases(tmp_path / "images", count=40)
    lines = ["image,digits"] + [f"images/{name},{';'.join(map(str, sorted(set(d))))}" for name, d in rows]
    lines[7] = lines[7] + ";kat"
    (tmp_path / "train.csv").write_text("\n".join(lines) + "\n")
    dm = ImageTableDataModule(str(tmp_path / "train.csv"), label_column="digits", multi_label=True)
    assert dm.class_names()[-1] == "kat"
    (warning,) = [w for w in recwarn if "far fewer examples" in str(w.message)]
    message = str(warning.message)
    assert "labels with far fewer examples" in message and "'kat' (1 example: " in message and "\n" not in message
    assert "train.csv:8)" in message  # the header is line 1
    recwarn.clear()
    named = ImageTableDataModule(str(tmp_path / "train.csv"), label_column="digits", multi_label=True, classes=None)
    with pytest.raises(ConfigError, match=r"one of the classes .* 'kat'"):
        ImageTableDataModule(
            str(tmp_path / "train.csv"), label_column="digits", multi_label=True, classes=[str(d) for d in range(10)]
        ).class_names()
    assert named.num_classes == 11


def test_a_table_a_spreadsheet_saved_as_csv_utf8_reads_as_any_other(canvas_table, tmp_path):
    """Excel's "CSV UTF-8" starts with a byte-order mark and ends lines with CRLF: the first column is still `image`."""
    exported = tmp_path / "exported.csv"
    exported.write_text(canvas_table.read_text().replace("\n", "\r\n"), encoding="utf-8-sig", newline="")
    assert exported.read_bytes().startswith(b"\xef\xbb\xbf")
    dm = ImageTableDataModule(str(exported), label_column="digits", multi_label=True)
    assert dm.class_names() == [str(d) for d in range(10)] and dm.num_classes == 10
