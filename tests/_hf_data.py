"""A small Hugging Face dataset as users save one: real digit images with a ClassLabel, label sets and a number."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tlkit.datamodules.digits import digit_images

#: Deliberately not alphabetical: the ClassLabel's order is the head's, never re-sorted.
NAMES = ["zero", "one", "two"]


def _rows(indices: list[int], images: list, labels: list) -> dict[str, list]:
    return {
        "image": [images[i].resize((16, 16)) for i in indices],
        "label": [int(labels[i]) for i in indices],
        "tags": [[int(labels[i]) % 2] + ([2] if labels[i] < 2 else []) for i in indices],
        "value": [float(labels[i]) for i in indices],
    }


def save_digit_dataset(folder: Path) -> Any:
    """A DatasetDict (``train`` 45 rows, ``validation`` 15) of 16-pixel digits 0-2 with columns ``image``, ``label``
    (ClassLabel of `NAMES`), ``tags`` (a list of ClassLabel: even, odd, small) and ``value`` (float32), saved with
    ``save_to_disk`` in ``folder``; returns it."""
    import datasets

    images, labels = digit_images()
    picked = [i for i, label in enumerate(labels) if label < 3][:60]
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "label": datasets.ClassLabel(names=NAMES),
            "tags": datasets.List(datasets.ClassLabel(names=["even", "odd", "small"])),
            "value": datasets.Value("float32"),
        }
    )
    data = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict(_rows(picked[:45], images, labels), features=features),
            "validation": datasets.Dataset.from_dict(_rows(picked[45:], images, labels), features=features),
        }
    )
    data.save_to_disk(str(folder))
    return data
