"""Text datamodules: reading files, bad input, seeded splits, tokenization with dynamic padding, feature serving,
and the bundled Rotten Tomatoes snippets."""

from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import quiet_trainer, sentiment_texts
from tlkit.backbones import Backbone
from tlkit.data_request import DataRequest, Features
from tlkit.datamodules import RottenTomatoesDataModule, TextFileDataModule
from tlkit.errors import ConfigError
from tlkit.features import FeatureCache, FeatureServing


def _request(tiny_bert) -> DataRequest:
    return DataRequest.for_backbone(Backbone(f"hf:{tiny_bert}"))


def test_csv_tsv_jsonl_and_folders_read_the_same_texts(tmp_path, sentiment_csv):
    texts, labels = sentiment_texts()
    (tmp_path / "reviews.tsv").write_text(
        "review\tsentiment\n" + "".join(f"{t}\t{lbl}\n" for t, lbl in zip(texts, labels))
    )
    (tmp_path / "reviews.jsonl").write_text(
        "".join(json.dumps({"text": t, "label": lbl}) + "\n" for t, lbl in zip(texts, labels))
    )
    for i, (text, label) in enumerate(zip(texts, labels)):
        (tmp_path / "folder" / label).mkdir(parents=True, exist_ok=True)
        (tmp_path / "folder" / label / f"{i:03d}.txt").write_text(text)
    modules = [
        TextFileDataModule(str(sentiment_csv)),
        TextFileDataModule(str(tmp_path / "reviews.tsv"), text_column="review", label_column="sentiment"),
        TextFileDataModule(str(tmp_path / "reviews.jsonl")),
        TextFileDataModule(str(tmp_path / "folder")),
    ]
    loaded = [dm.load_data() for dm in modules]
    for classes, splits in loaded:
        assert classes == ["neg", "pos"]
        assert sorted(splits["train"].samples) == sorted(texts)
        assert sorted(zip(splits["train"].samples, splits["train"].labels)) == sorted(
            (t, classes.index(lbl)) for t, lbl in zip(texts, labels)
        )


@pytest.mark.parametrize(
    ("content", "kwargs", "match"),
    [
        (
            "review,label\ngood film,pos\n",
            {},
            r"`text_column` 'text' to be a column of .*reviews\.csv, but its columns are 'review', 'label'",
        ),
        ("text,labels\ngood film,pos\n", {}, r"`label_column` 'label' to be a column.*Closest: labels"),
        ("text,label\ngood film,pos\n ,neg\n", {}, r"non-empty `text` in every row, but .*reviews\.csv:3 has none"),
        ("text,label\ngood film,pos\nbad film,meh\n", {"classes": ["neg", "pos"]}, r"reviews\.csv:3 has 'meh'"),
        (
            "text,label\ngood film,pos\nbad film,\n",
            {},
            r"non-empty `label` in every row, but .*reviews\.csv:3 has none",
        ),
        (
            '{"text": "good", "label": "pos"}\n{"text": "bad", "label": " "}\n',
            {},
            r"non-empty `label`.*reviews\.jsonl:2 has none",
        ),
    ],
)
def test_bad_text_files_fail_before_training_naming_file_and_line(tmp_path, content, kwargs, match):
    path = tmp_path / ("reviews.jsonl" if content.startswith("{") else "reviews.csv")
    path.write_text(content)
    with pytest.raises(ConfigError, match=match):
        TextFileDataModule(str(path), **kwargs).setup()


def test_a_class_with_far_fewer_examples_is_reported_with_where_it_is(tmp_path, sentiment_csv):
    path = tmp_path / "typo.csv"
    path.write_text(sentiment_csv.read_text() + "the film was fine,poss\n")
    with pytest.warns(UserWarning, match=r"far fewer examples.*'poss' \(1 example: .*typo\.csv:62\)"):
        classes, _ = TextFileDataModule(str(path)).load_data()
    assert classes == ["neg", "pos", "poss"]  # reported, not dropped: listing `classes` makes it an error


def test_an_unknown_file_type_is_one_line(tmp_path):
    (tmp_path / "reviews.xlsx").write_text("x")
    with pytest.raises(ConfigError, match=r"\.csv, \.tsv, \.jsonl file or a folder"):
        TextFileDataModule(str(tmp_path / "reviews.xlsx")).setup()


def test_splits_are_seeded_disjoint_and_limited(sentiment_csv):
    first, again = (TextFileDataModule(str(sentiment_csv), labels_per_class=5, seed=3) for _ in range(2))
    other = TextFileDataModule(str(sentiment_csv), labels_per_class=5, seed=4)
    for dm in (first, again, other):
        dm.setup()
    assert first.splits["train"].samples == again.splits["train"].samples
    assert first.splits["train"].samples != other.splits["train"].samples
    assert sorted(first.splits["train"].labels) == [0] * 5 + [1] * 5
    # Positions in the file: texts can repeat, rows cannot.
    rows = {text: i for i, text in enumerate(sentiment_texts()[0])}
    train, val, test = ({rows[t] for t in first.splits[s].samples} for s in ("train", "val", "test"))
    assert not (train & val) and not (train & test) and not (val & test)


def test_batches_are_padded_to_their_longest_text_not_to_max_length(tiny_bert, sentiment_csv):
    dm = TextFileDataModule(str(sentiment_csv), batch_size=4, max_length=40)
    dm.setup()
    collate = dm.collate(_request(tiny_bert))
    samples = [dm.dataset("train", _request(tiny_bert))[i] for i in range(4)]
    encoded, labels = collate(samples)
    longest = max(len(text.split()) for text, _ in samples) + 2  # [CLS] ... [SEP], one token per word here
    assert encoded["input_ids"].shape == (4, longest) < (4, 40)
    assert labels.tolist() == [label for _, label in samples]
    assert collate.max_length == 40  # the datamodule's, below the backbone's 64


def test_an_image_backbone_is_refused_in_one_line(sentiment_csv):
    dm = TextFileDataModule(str(sentiment_csv))
    dm.setup()
    with pytest.raises(ConfigError, match=r"text backbone .* but got a model whose backbone reads images"):
        dm.collate(DataRequest.for_backbone(Backbone("test_resnet", weights=None)))


def test_served_features_are_computed_once_and_collated_as_features(tiny_bert, sentiment_csv):
    backbone = Backbone(f"hf:{tiny_bert}")
    cache = FeatureCache("memory")
    FeatureCache.memory.clear()
    serving = FeatureServing(cache, backbone)
    request = DataRequest.for_backbone(backbone)
    dm = TextFileDataModule(str(sentiment_csv))
    dm.setup()
    dm.serve_features(serving)
    dataset = dm.dataset("train", request)
    features, _ = dm.collate(request)([dataset[0], dataset[1]])
    assert isinstance(features, Features) and features.values.shape == (2, 32)
    serving.set_active(False)
    encoded, _ = dm.collate(request)([dataset[0], dataset[1]])  # the same samples, now as text
    with torch.no_grad():
        torch.testing.assert_close(features.values, backbone.eval()(encoded), atol=1e-5, rtol=0)
    serving.set_active(True)
    assert cache.computed == 1
    dm.dataset("train", request)
    assert cache.computed == 1  # reused


def test_rotten_tomatoes_is_deduplicated_balanced_enough_and_seeded():
    dm = RottenTomatoesDataModule(labels_per_class=100, seed=0)
    dm.setup()
    train = dm.splits["train"]
    assert dm.class_names() == ["rotten", "fresh"] and sorted(train.labels) == [0] * 100 + [1] * 100
    everything = [t for s in dm.splits.values() for t in s.samples]
    assert len(everything) == len(set(everything))  # each text once, no leak between splits
    assert 1800 < len(dm.splits["test"].samples) < 2000
    again = RottenTomatoesDataModule(labels_per_class=100, seed=0)
    again.setup()
    assert again.splits["train"].samples == train.samples


def test_a_text_model_trains_through_the_datamodule(tiny_bert, sentiment_csv):
    from tlkit.strategies import FineTuning

    model = FineTuning(f"hf:{tiny_bert}", lr_decay=0.5)
    dm = TextFileDataModule(str(sentiment_csv), batch_size=8)
    trainer = quiet_trainer(max_epochs=2)
    trainer.fit(model, datamodule=dm)
    (result,) = trainer.test(model, datamodule=dm, verbose=False)
    assert model.num_classes == 2 and 0.0 <= result["test/acc"] <= 1.0
    assert trainer.global_step == 2 * len(dm.train_dataloader())


def test_predictions_are_named_by_their_text(sentiment_csv):
    dm = TextFileDataModule(str(sentiment_csv))
    dm.setup()
    names = dm.predict_sample_names()
    assert names == dm.splits["test"].samples and all(len(n) <= 80 for n in names)
