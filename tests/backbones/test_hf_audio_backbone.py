"""Hugging Face speech encoders over waveforms (``hf:<folder>`` with a wav2vec2 config): groups from the feature
encoder up, the feature extractor's rate and normalisation, features pooled over each clip's real frames, and a
fit through the command; encoders over spectrograms refused in one line. Tiny random models saved to a folder stand
in for the Hub's."""

from __future__ import annotations

import pytest
import torch

from tests._audio_data import tiny_wav2vec2, write_clips
from tests._console import run_here_captured
from tlkit.backbones import AudioConfig, Backbone
from tlkit.errors import ConfigError

transformers = pytest.importorskip("transformers")


def test_a_waveform_encoder_pools_each_clips_real_frames_whatever_it_is_batched_with(tmp_path):
    backbone = Backbone(f"hf:{tiny_wav2vec2(tmp_path / 'w2v')}").eval()
    assert backbone.group_names == ["feature_encoder", "feature_projection", "layer.0", "layer.1"]
    assert backbone.data_config == AudioConfig(sample_rate=16000, max_seconds=4.0) and backbone.num_features == 32
    clip = torch.sin(torch.arange(6000) / 7.0) * 0.2 + torch.randn(6000) * 0.01
    with torch.no_grad():
        alone = backbone({"waveform": clip[None], "lengths": torch.tensor([6000])})
        padded = torch.zeros(2, 10000)
        padded[0, :6000], padded[1] = clip, torch.randn(10000) * 0.3
        batched = backbone({"waveform": padded, "lengths": torch.tensor([6000, 10000])})
        louder = backbone({"waveform": clip[None] * 5, "lengths": torch.tensor([6000])})
    torch.testing.assert_close(batched[0], alone[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(louder, alone, rtol=1e-4, atol=1e-4)  # the extractor's normalisation, inside


def test_a_waveform_encoder_fits_with_its_feature_encoder_frozen_through_the_command(tmp_path, capfd):
    model = tiny_wav2vec2(tmp_path / "w2v", norm="group")
    run = [
        "fit",
        "--model=FineTuning",
        f"--model.init_args.backbone=hf:{model}",
        "--model.init_args.trainable_groups=3",  # everything above the convolutional feature encoder
        "--data=AudioFolderDataModule",
        f"--data.init_args.data_dir={write_clips(tmp_path / 'clips')}",
        "--data.init_args.batch_size=4",
        "--trainer.max_epochs=1",
        "--trainer.enable_model_summary=false",
    ]
    result = run_here_captured(run, tmp_path, capfd)
    assert result.returncode == 0, result.stderr[-2000:]
    last = next(tmp_path.glob("logs/*/version_0/checkpoints/last.ckpt"))
    state = torch.load(last, weights_only=True)["state_dict"]
    initial = Backbone(f"hf:{model}").state_dict()
    conv = "model.encoder.feature_extractor.conv_layers.0.conv.weight"
    top = "model.encoder.encoder.layers.1.feed_forward.output_dense.weight"
    assert torch.equal(state[f"backbone.{conv}"], initial[conv])  # frozen
    assert not torch.equal(state[f"backbone.{top}"], initial[top])  # trained


def test_an_encoder_over_spectrograms_is_refused_in_one_line(tmp_path):
    transformers.WhisperConfig(d_model=16, encoder_layers=1, decoder_layers=1).save_pretrained(tmp_path / "whisper")
    with pytest.raises(ConfigError, match=r"but it is 'whisper', which reads spectrograms: not supported yet") as error:
        Backbone(f"hf:{tmp_path / 'whisper'}")
    assert "\n" not in str(error.value)


def test_lora_adapts_a_waveform_encoders_attention_and_trains_only_its_adapters(tmp_path):
    pytest.importorskip("peft")
    from tlkit.backbones import Adapter

    backbone = Backbone(f"hf:{tiny_wav2vec2(tmp_path / 'w2v')}")
    backbone.add_adapter(Adapter(rank=4))
    trainable = [name for name, p in backbone.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)
    assert any("attention.q_proj" in name for name in trainable)
    features = backbone({"waveform": torch.randn(2, 8000) * 0.1, "lengths": torch.tensor([8000, 6000])})
    features.sum().backward()
    assert all(p.grad is not None for p in backbone.parameters() if p.requires_grad)
