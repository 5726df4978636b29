"""Hugging Face text models as backbones: layer groups, mean pooling over the mask, weights, bad names; decoder-only
models (a tiny GPT-2) padded and pooled at their last real token, through the console script too; and the real
all-MiniLM-L6-v2 (bundled in a package) gives embeddings that carry meaning and sentiment."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests._console import shipped
from tlkit.backbones import Backbone, TextConfig
from tlkit.cli import main
from tlkit.errors import ConfigError


def _encode(backbone: Backbone, texts: list[str]) -> dict[str, torch.Tensor]:
    return dict(backbone.data_config.tokenizer(texts, padding=True, return_tensors="pt"))


def test_groups_are_the_embeddings_and_each_layer(tiny_bert):
    backbone = Backbone(f"hf:{tiny_bert}")
    assert backbone.group_names == ["embeddings", "layer.0", "layer.1"]
    assert backbone.num_features == 32 and backbone.reads_text
    assert isinstance(backbone.data_config, TextConfig) and backbone.data_config.max_length == 64
    grouped = {n for g in backbone.layer_groups for n in g.parameter_names}
    assert grouped == {n for n, _ in backbone.model.named_parameters()}  # every parameter, no pooler
    assert not any("pooler" in n for n in grouped)
    backbone.freeze()
    backbone.unfreeze(["layer.1"])
    assert backbone.trainable_group_names == ["layer.1"]


def test_features_are_the_mean_over_real_tokens_whatever_the_padding(tiny_bert):
    backbone = Backbone(f"hf:{tiny_bert}").eval()
    with torch.no_grad():
        alone = backbone(_encode(backbone, ["good film"]))
        padded = backbone(_encode(backbone, ["good film", "the plot was very very dull and the acting poor"]))
        states = backbone.model.encoder(**_encode(backbone, ["good film"])).last_hidden_state
    assert padded.shape == (2, 32)
    torch.testing.assert_close(padded[:1], alone, atol=1e-5, rtol=0)
    torch.testing.assert_close(alone, states.mean(dim=1), atol=1e-6, rtol=0)


def test_weights_null_is_random_and_a_file_loads(tiny_bert, tmp_path):
    pretrained = Backbone(f"hf:{tiny_bert}")
    torch.manual_seed(1)
    random = Backbone(f"hf:{tiny_bert}", weights=None)
    first = "encoder.embeddings.word_embeddings.weight"
    assert not torch.equal(pretrained.model.state_dict()[first], random.model.state_dict()[first])
    torch.save(pretrained.model.encoder.state_dict(), tmp_path / "weights.pt")
    loaded = Backbone(f"hf:{tiny_bert}", weights=str(tmp_path / "weights.pt"))
    assert torch.equal(loaded.model.state_dict()[first], pretrained.model.state_dict()[first])


def test_a_name_transformers_cannot_load_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"Expected `backbone` 'hf:.*missing' to name a Hugging Face model \(folder"):
        (tmp_path / "missing").mkdir()
        Backbone(f"hf:{tmp_path / 'missing'}")


def test_adapters_apply_to_a_text_encoder(tiny_bert):
    from tlkit.backbones import Adapter

    backbone = Backbone(f"hf:{tiny_bert}")
    backbone.add_adapter(Adapter(rank=2, target_modules=["query", "value"]))
    assert backbone.group_names == ["embeddings", "layer.0", "layer.1"]
    assert [len(g.parameters) for g in backbone.layer_groups] == [0, 4, 4]


@pytest.fixture(scope="module")
def minilm():
    return Backbone("hf:sentence-transformers/all-MiniLM-L6-v2").eval()  # offline: the bundled copy


def test_minilm_embeddings_put_paraphrases_closer_than_unrelated_sentences(minilm):
    texts = ["A man is playing a guitar.", "Someone plays an acoustic guitar.", "The stock market fell sharply today."]
    with torch.no_grad():
        features = torch.nn.functional.normalize(minilm(_encode(minilm, texts)), dim=-1)
    similarity = features @ features.T
    assert minilm.group_names[0] == "embeddings" and len(minilm.group_names) == 7
    assert similarity[0, 1] > 0.5 > similarity[0, 2] + 0.2


def test_minilm_features_carry_sentiment_on_rotten_tomatoes(minilm):
    from sklearn.linear_model import LogisticRegression

    from tlkit.datamodules.rotten_tomatoes import rotten_tomatoes_snippets

    texts, labels = rotten_tomatoes_snippets()
    rng = np.random.default_rng(0)
    by_class = [rng.permutation([i for i, label in enumerate(labels) if label == c])[:700] for c in (0, 1)]
    train = [int(i) for pair in zip(by_class[0][:550], by_class[1][:550]) for i in pair]  # balanced, interleaved
    test = [int(i) for pair in zip(by_class[0][550:], by_class[1][550:]) for i in pair]
    with torch.no_grad():

        def embed(indices):
            # Chunks of similar lengths pad little: the same features in about half the time.
            by_length = sorted(range(len(indices)), key=lambda k: len(texts[indices[k]]))
            chunks = [by_length[k : k + 100] for k in range(0, len(by_length), 100)]
            features = torch.cat([minilm(_encode(minilm, [texts[indices[k]] for k in chunk])) for chunk in chunks])
            return features[torch.argsort(torch.tensor(by_length))].numpy()

        x_train, x_test = embed(train), embed(test)
    probe = LogisticRegression(max_iter=2000).fit(x_train, [labels[j] for j in train])
    accuracy = probe.score(x_test, [labels[j] for j in test])
    assert accuracy > 0.7, accuracy


def test_a_decoder_only_model_pads_and_pools_its_last_real_token(tiny_gpt2):
    backbone = Backbone(f"hf:{tiny_gpt2}").eval()
    assert backbone.group_names == ["wpe+wte", "layer.0", "layer.1+ln_f"]
    assert backbone.data_config.tokenizer.pad_token == "<|endoftext|>"  # it shipped none
    short, long = "good film", "the plot was very very dull and the acting poor"
    with torch.no_grad():
        alone = backbone(_encode(backbone, [short]))
        padded = backbone(_encode(backbone, [short, long]))
        states = backbone.model.encoder(**_encode(backbone, [short])).last_hidden_state
    # Only the last token has attended to the whole text; the padding after it changes nothing.
    torch.testing.assert_close(alone, states[:, -1], atol=1e-6, rtol=0)
    torch.testing.assert_close(padded[:1], alone, atol=1e-5, rtol=0)
    mean = Backbone(f"hf:{tiny_gpt2}", text_pooling="mean").eval()
    with torch.no_grad():
        torch.testing.assert_close(mean(_encode(mean, [short])), states.mean(dim=1), atol=1e-6, rtol=0)


def test_an_encoder_keeps_mean_pooling_and_an_image_backbone_refuses_text_pooling(tiny_bert):
    assert Backbone(f"hf:{tiny_bert}").model.pooling == "mean"
    with pytest.raises(ConfigError, match=r"`text_pooling` 'auto' for the image backbone 'test_resnet'"):
        Backbone("test_resnet", weights=None, text_pooling="last")


def test_the_shipped_text_config_fits_a_decoder_only_model_from_the_console(tiny_gpt2, tmp_path, monkeypatch):
    # The console script's entry point, in this process: what `tlkit fit` runs, without a new interpreter's imports.
    monkeypatch.chdir(tmp_path)
    args = [f"--model.init_args.backbone=hf:{tiny_gpt2}", "--model.init_args.weights=null"]
    main([*shipped("text_finetune.yaml", *args), "--trainer.fast_dev_run=true", "--trainer.enable_progress_bar=false"])
    assert (tmp_path / "logs" / "text_finetune" / "version_0").is_dir()
