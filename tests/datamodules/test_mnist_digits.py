"""The MNIST <-> digits pair: two real bundled domains, in both directions, split like every domain pair."""

import numpy as np
import pytest

from tlkit.datamodules import MnistDigitsDataModule
from tlkit.datamodules.mnist_digits import mnist_5k_images
from tlkit.errors import ConfigError


def test_mnist_5k_is_500_real_digits_per_class_white_on_black():
    images, labels = mnist_5k_images()
    assert len(images) == 5000 and np.bincount(labels).tolist() == [500] * 10
    pixels = np.asarray(images[0])
    assert pixels.shape == (28, 28, 3) and pixels.mean() < 80 and pixels.max() > 200  # dark background, bright ink


@pytest.mark.parametrize(("source", "sizes"), [("mnist", (5000, 1797)), ("digits", (1797, 5000))])
def test_both_directions_split_each_domain(source, sizes):
    dm = MnistDigitsDataModule(source=source, image_size=32)
    dm.setup()
    n_source, n_target = sizes
    splits = {name: len(split.labels) for name, split in dm.splits.items()}
    assert splits["source_train"] + splits["source_val"] == n_source
    assert splits["target_train"] + splits["target_val"] + splits["target_test"] == n_target
    assert dm.class_names() == [str(d) for d in range(10)]
    # The target's 8x8 or 28x28 originals become image_size inputs like the source's.
    (xs, _), xt = (next(iter(loader)) for loader in dm.train_dataloader().iterables.values())
    assert xs.shape[1:] == xt.shape[1:] == (3, 32, 32)


def test_splits_are_seeded():
    first, again = MnistDigitsDataModule(seed=3), MnistDigitsDataModule(seed=3)
    first.setup(), again.setup()
    assert first.splits["target_test"].labels == again.splits["target_test"].labels


def test_unknown_source_names_the_two_domains():
    with pytest.raises(ConfigError, match=r"`source` to be 'mnist' or 'digits', but got 'usps'"):
        MnistDigitsDataModule(source="usps")


def test_a_small_target_keeps_a_seeded_draw_of_the_pool_and_the_same_evaluation_splits():
    full, small = (
        MnistDigitsDataModule(source="digits", seed=1),
        MnistDigitsDataModule(source="digits", seed=1, target_train_size=150),
    )
    full.setup(), small.setup()
    assert len(small.splits["target_train"].labels) == 150
    pool = {sample.tobytes() for sample in full.splits["target_train"].samples}
    assert {sample.tobytes() for sample in small.splits["target_train"].samples} <= pool
    for split in ("target_val", "target_test", "source_train"):
        assert small.splits[split].labels == full.splits[split].labels
    again = MnistDigitsDataModule(source="digits", seed=1, target_train_size=150)
    again.setup()
    assert again.splits["target_train"].labels == small.splits["target_train"].labels
    (_, _), xt = (next(iter(loader)) for loader in small.train_dataloader().iterables.values())
    assert len(xt) == small.hparams.batch_size


@pytest.mark.parametrize(("size", "match"), [(0, r"an integer >= 1"), (10**6, r"at most the target training pool's")])
def test_a_target_size_it_cannot_serve_is_one_line(size, match):
    with pytest.raises(ConfigError, match=match):
        dm = MnistDigitsDataModule(target_train_size=size)
        dm.setup()
