"""Ranking candidate backbones and layer groups: from Python and through `tlkit rank`, reusing the feature cache."""

import json

import numpy as np
import pytest
import torch

from tests.conftest import quiet_trainer
from tlkit.backbones import Backbone
from tlkit.cli import main
from tlkit.datamodules import DigitsDataModule, MultiDigitsDataModule
from tlkit.engines.model_ranking import SCORES, markdown_table, rank_backbones, rank_layers, write_results
from tlkit.errors import ConfigError
from tlkit.features import FeatureCache
from tlkit.functional import logme, logme_evidence, logme_targets
from tlkit.strategies import FeatureExtraction


def digits(**kwargs) -> DigitsDataModule:
    return DigitsDataModule(**{"image_size": 32, "labels_per_class": 6, "augment": False, **kwargs})


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    """Fixed weights for a tiny candidate, so two builds (ranking, then training) have the same fingerprint."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "test_resnet.pt"
    torch.save(Backbone("test_resnet", weights=None).model.state_dict(), path)
    return path


def test_ranks_candidates_best_first_with_every_score_that_applies():
    results = rank_backbones(digits(), ["tf_efficientnet_lite0", "test_resnet@null"], sort_by="logme")
    assert [r.candidate for r in results] == ["tf_efficientnet_lite0", "test_resnet@null"]
    pretrained, random = results
    assert pretrained.scores["logme"] > random.scores["logme"]
    # LEEP and NCE read the candidate's own ImageNet classifier; a randomly initialised backbone has none.
    assert pretrained.scores["leep"] < 0 and pretrained.scores["nce"] <= 0
    assert random.scores["leep"] is None and random.scores["nce"] is None
    for result in results:
        assert all(0 <= result.scores[s] <= 1 for s in ("knn_accuracy", "linear_probe_accuracy"))
    table = markdown_table(results)
    assert "| 1 | `tf_efficientnet_lite0` | 1280 |" in table and "| 2 | `test_resnet@null` | 96 |" in table


def test_features_computed_for_ranking_are_reused_by_the_feature_extraction_run(tmp_path, weights_file):
    cache = FeatureCache("disk", tmp_path / "cache")
    rank_backbones(digits(), [f"test_resnet@{weights_file}"], cache=cache)
    assert cache.computed == 1
    model = FeatureExtraction(
        "test_resnet", weights=str(weights_file), cache_features="disk", cache_dir=str(tmp_path / "cache")
    )
    quiet_trainer(max_epochs=1).fit(model, datamodule=digits())
    assert model.feature_cache.computed == 1  # validation only: the training features came from the ranking


def test_layer_groups_are_scored_input_to_output_and_the_last_is_the_backbone_itself():
    results = rank_layers(digits(), "test_resnet@null")
    backbone_groups = Backbone("test_resnet", weights=None).group_names
    assert [r.candidate for r in results] == backbone_groups
    assert [r.num_features for r in results] == [32, 32, 48, 192, 96]
    assert all(r.scores["leep"] is None for r in results)


def test_layer_scores_equal_scores_of_the_same_pooled_features():
    torch.manual_seed(0)
    backbone = Backbone("test_resnet", weights=None)
    dm = digits()
    last = rank_layers(dm, backbone)[-1]
    whole = rank_backbones(dm, [backbone])[0]
    assert last.scores["logme"] == pytest.approx(whole.scores["logme"], rel=1e-4)


def test_results_are_written_as_csv_and_json(tmp_path):
    results = rank_backbones(digits(), ["test_resnet@null"])
    csv_path, json_path = write_results(results, tmp_path)
    header, row = csv_path.read_text().splitlines()
    assert header.split(",")[3:9] == list(SCORES) and row.startswith("1,test_resnet@null,96,")
    assert json.loads(json_path.read_text())[0]["scores"]["logme"] == pytest.approx(results[0].scores["logme"])


def test_logme_in_the_ranking_is_the_functional_score_of_the_cached_features(tmp_path, weights_file):
    cache = FeatureCache("disk", tmp_path)
    (result,) = rank_backbones(digits(), [f"test_resnet@{weights_file}"], cache=cache)
    (stored,) = [torch.load(path, weights_only=True) for path in tmp_path.glob("*.pt")]
    assert result.scores["logme"] == pytest.approx(logme(stored["features"], stored["labels"]))


def test_console_rank_prints_writes_and_logs(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    main(["rank", "--data=DigitsDataModule", "--data.image_size=32", "--data.labels_per_class=5",
          "--candidates=[test_resnet@null, test_efficientnet@null]", "--cache_features=memory"])  # fmt: skip
    captured = capsys.readouterr()
    out = captured.out
    assert "Candidates, best first by `logme`" in out and "`test_efficientnet@null`" in out
    # Progress while scoring, per candidate and per score (ranking a real zoo takes minutes).
    assert "tlkit rank: [1/2] test_resnet@null: features of" in captured.err
    assert "tlkit rank: [2/2] test_efficientnet@null: features of" in captured.err
    assert "tlkit rank:   logme = " in captured.err and "tlkit rank:   linear_probe_accuracy = " in captured.err
    run = tmp_path / "logs" / "rank" / "version_0"
    assert {p.name for p in run.iterdir()} >= {"ranking.csv", "ranking.json", "config.yaml"}
    assert list(run.glob("events.out.tfevents.*"))
    main(["rank", "--data=DigitsDataModule", "--data.image_size=32", "--data.labels_per_class=5",
          "--layers_of=test_resnet@null"])  # fmt: skip
    assert "Layer groups of `test_resnet@null`" in capsys.readouterr().out
    assert (tmp_path / "logs" / "rank" / "version_1" / "ranking.csv").is_file()  # a new run, nothing overwritten


def test_console_rank_prints_its_config(capsys):
    with pytest.raises(SystemExit):
        main(["rank", "--data=DigitsDataModule", "--candidates=[resnet18]", "--print_config"])
    out = capsys.readouterr().out
    assert "class_path: tlkit.datamodules.DigitsDataModule" in out and "- resnet18" in out


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--candidates=[]"], r"`candidates` to be at least one backbone to rank"),
        (["--candidates=[efficientnet_lite9]"], r"Candidate 'efficientnet_lite9'.*Closest: efficientnet_lite"),
        (["--candidates=[a]", "--sort_by=accuracy"], r"sort_by.*'logme', 'leep'"),
        (["--candidates=[a]", "--layers_of=b"], r"`layers_of` to be unset when `candidates` are given"),
    ],
)
def test_bad_rank_input_is_one_line(args, match, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["rank", "--data=DigitsDataModule", *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("tlkit rank: error: ") and len(err.strip().splitlines()) == 2
    import re

    assert re.search(match, err), err


def test_a_domain_pair_is_refused_with_the_datamodules_that_work():
    from tlkit.datamodules import DigitsMDataModule

    with pytest.raises(ConfigError, match=r"`data` to be a datamodule with one labelled training split"):
        rank_backbones(DigitsMDataModule(image_size=32), ["test_resnet@null"])


def test_any_module_with_its_source_classifier_gets_leep_and_nce():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    source = torch.nn.Linear(8, 5)
    with_source = Backbone(model=net, num_features=8, source_classifier=source)
    (result,) = rank_backbones(digits(), {"mine": with_source})
    assert result.candidate == "mine" and result.scores["leep"] is not None and result.scores["nce"] is not None
    assert Backbone(model=net, num_features=8).source_classifier is None


def test_only_the_requested_scores_are_computed():
    (result,) = rank_backbones(digits(), ["tf_efficientnet_lite0"], scores=["logme", "leep"], sort_by="leep")
    assert set(result.score_seconds) == {"logme", "leep"}
    assert result.scores["nce"] is None and result.scores["linear_probe_accuracy"] is None


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"scores": ["logme", "accuracy"]}, r"`scores` to be a list of score names, but got 'accuracy'"),
        ({"scores": ["h_score"]}, r"`sort_by` to be one of the computed scores \(h_score\), but got 'logme'"),
        ({"scores": []}, r"`scores` to be at least one score name"),
    ],
)
def test_bad_score_selection_is_refused_before_any_forward_pass(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        rank_backbones(digits(), ["no_such_model"], **kwargs)


@pytest.mark.parametrize("targets", ["labels", "sum"])
def test_ranking_scores_label_sets_and_numbers_in_their_own_forms(targets):
    """LogME as the mean over labels (or standardised targets), the baselines as micro-F1 (or R²); LEEP, NCE and
    H-score, defined for one class per example, left out. Pretrained features rank above random ones."""
    data = MultiDigitsDataModule(targets=targets, num_images=300, image_size=32)
    results = rank_backbones(data, ["tf_efficientnet_lite0", "tf_efficientnet_lite0@null"])
    assert [r.candidate for r in results] == ["tf_efficientnet_lite0", "tf_efficientnet_lite0@null"]
    for result in results:
        assert result.scores["leep"] is None and result.scores["nce"] is None and result.scores["h_score"] is None
        assert all(np.isfinite(result.scores[s]) for s in ("logme", "knn_accuracy", "linear_probe_accuracy"))
    features, labels = torch.randn(60, 8, dtype=torch.float64), torch.randn(60, 2, dtype=torch.float64)
    expected = [logme_evidence(features, (c - c.mean()) / c.std())[0] for c in labels.T]
    assert logme_targets(features, labels, standardise=True) == pytest.approx(sum(expected) / 2)
