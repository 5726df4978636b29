"""Shared fixtures: tiny models, a small on-disk image folder, quiet trainers. Everything offline and on CPU."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import lightning as L
import pytest
import torch

from tlkit.datamodules.digits import digit_images

TINY_BACKBONES = ["test_efficientnet", "test_resnet", "test_vit"]
#: A `tlkit fit` in seconds: a tiny random-init FineTuning on 3 digits per class, 2 epochs.
TINY_FIT_ARGS = [
    "--model=FineTuning",
    "--model.backbone=test_resnet",
    "--model.weights=null",
    "--data=DigitsDataModule",
    "--data.image_size=32",
    "--data.labels_per_class=3",
    "--trainer.enable_progress_bar=false",
    "--trainer.max_epochs=2",
]


#: Test modules whose tests start processes of their own (console-script runs, DDP ranks, torchrun nodes, pip): the
#: suite's longest tests. Collected first, so that the two pytest-xdist workers end on short tests, not one of them
#: idle while the other finishes a minute-long run started last.
PROCESS_MODULES = {
    "test_multi_device.py",
    "test_user_journey.py",
    "test_tune.py",
    "test_packaging.py",
    "test_run_folders.py",
    "test_ddp.py",
    "test_ddp_domain_adaptation.py",
    "test_validators.py",
    "test_source_reference.py",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.path.name not in PROCESS_MODULES)  # stable: each group keeps its order


# Image checks (and anything else tlkit caches) go to a folder of this test session, not the user's ~/.cache.
os.environ.setdefault("TLKIT_CACHE_DIR", tempfile.mkdtemp(prefix="tlkit-test-cache-"))

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs two workers on the two cores: one thread each instead of two threads fighting over a core.
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    # The suite never talks to a model hub: `imagenet` for tf_efficientnet_lite0 always takes the bundled weights.
    monkeypatch.setattr("tlkit.backbones._builders.hub_reachable", lambda *a, **k: False)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def write_image_folder(root: Path, classes=("0", "1", "2"), per_class: int = 12, size: int = 16) -> Path:
    """Real digit images saved as PNG files in ``root/<class>/<n>.png``."""
    images, labels = digit_images()
    for name in classes:
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        picked = [img for img, label in zip(images, labels) if str(label) == name][:per_class]
        for i, image in enumerate(picked):
            image.resize((size, size)).save(folder / f"{i}.png")
    return root


@pytest.fixture
def image_folder(tmp_path) -> Path:
    return write_image_folder(tmp_path / "images")


def quiet_trainer(**kwargs) -> L.Trainer:
    defaults = dict(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    return L.Trainer(**{**defaults, **kwargs})


POSITIVE = ["good", "great", "fine", "lovely", "superb", "wonderful"]
NEGATIVE = ["bad", "awful", "poor", "dull", "boring", "terrible"]
FILLER = ["the", "film", "was", "a", "plot", "and", "very", "acting", "story", "quite"]


def sentiment_texts(n: int = 60, seed: int = 0) -> tuple[list[str], list[str]]:
    """Short synthetic reviews: a few filler words around one word of the label's sentiment; lengths vary."""
    g = torch.Generator().manual_seed(seed)
    texts, labels = [], []
    for i in range(n):
        label = "pos" if i % 2 == 0 else "neg"
        words = [
            FILLER[int(j)]
            for j in torch.randint(0, len(FILLER), (int(torch.randint(2, 9, (1,), generator=g)),), generator=g)
        ]
        pool = POSITIVE if label == "pos" else NEGATIVE
        words.insert(
            int(torch.randint(0, len(words) + 1, (1,), generator=g)),
            pool[int(torch.randint(0, len(pool), (1,), generator=g))],
        )
        texts.append(" ".join(words))
        labels.append(label)
    return texts, labels


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    """A 2-layer BERT with random weights and a word-level vocabulary, saved as a Hugging Face folder."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *POSITIVE, *NEGATIVE, *FILLER]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory) -> Path:
    """A 2-layer GPT-2 with random weights and a word-level vocabulary with an end-of-text token and no padding
    token (as GPT-2's own), saved as a Hugging Face folder: a decoder-only text backbone."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2Model, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-gpt2")
    vocab = {word: i for i, word in enumerate(["<|endoftext|>", "<unk>", *POSITIVE, *NEGATIVE, *FILLER])}
    words = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=words, eos_token="<|endoftext|>", unk_token="<unk>")
    tokenizer.save_pretrained(folder)
    config = GPT2Config(vocab_size=len(vocab), n_positions=64, n_embd=32, n_layer=2, n_head=2)
    torch.manual_seed(0)
    GPT2Model(config).save_pretrained(folder)
    return folder


@pytest.fixture
def sentiment_csv(tmp_path) -> Path:
    texts, labels = sentiment_texts()
    path = tmp_path / "reviews.csv"
    lines = ["text,label", *[f"{t},{lbl}" for t, lbl in zip(texts, labels)]]
    path.write_text("\n".join(lines) + "\n")
    return path
