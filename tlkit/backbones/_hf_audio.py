"""Hugging Face speech encoders over raw waveforms (``hf:<name or folder>`` whose config is wav2vec2, HuBERT, WavLM
or data2vec-audio) as a `Backbone`: features are the last hidden states mean-pooled over each clip's real frames.

The model's feature extractor becomes the backbone's `AudioConfig` (its sampling rate) and its per-clip
normalisation (zero mean, unit variance over the clip's real samples, where the extractor normalises) runs inside
the model, so an exported model reads plain waveforms. The attention mask reaches the encoder only where the model
was trained with one (``feat_extract_norm: layer``, as wav2vec2-large-lv60 and WavLM; the base models were trained on
zero-padded batches without it, as their model cards say). Groups: the convolutional feature encoder (freeze it as
the wav2vec2 fine-tuning recipes do: ``trainable_groups`` short of it), the feature projection with the positional
convolution, then each transformer layer.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from tlkit.errors import ConfigError
from tlkit.input_config import AudioConfig

#: transformers model types read here: encoders over raw waveforms.
WAVEFORM_ENCODERS = ("wav2vec2", "wav2vec2-conformer", "hubert", "wavlm", "data2vec-audio", "sew", "sew-d", "unispeech")
#: Audio model types that read spectrograms a feature extractor computes (not built here yet).
SPECTROGRAM_ENCODERS = ("whisper", "audio-spectrogram-transformer", "clap", "seamless_m4t", "speech_to_text")


class WaveformEncoder(nn.Module):
    """A transformers speech encoder over ``{"waveform": (N, T), "lengths": (N,)}``, mean-pooled to (N, H)."""

    def __init__(self, encoder: nn.Module, normalize: bool, use_mask: bool) -> None:
        super().__init__()
        self.encoder, self.normalize, self.use_mask = encoder, normalize, use_mask

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        waveform, lengths = batch["waveform"], batch["lengths"]
        positions = torch.arange(waveform.shape[1], device=waveform.device)
        mask = positions[None, :] < lengths[:, None]
        if self.normalize:  # the feature extractor's do_normalize, over each clip's real samples
            real = mask.to(waveform.dtype)
            count = real.sum(dim=1, keepdim=True).clamp(min=1)
            mean = (waveform * real).sum(dim=1, keepdim=True) / count
            variance = ((waveform - mean).square() * real).sum(dim=1, keepdim=True) / count
            waveform = (waveform - mean) / torch.sqrt(variance + 1e-7) * real
        attention = mask.long() if self.use_mask else None
        hidden = self.encoder(waveform, attention_mask=attention).last_hidden_state
        frames = self.encoder._get_feature_vector_attention_mask(hidden.shape[1], mask.long())
        weights = frames.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


def waveform_groups(encoder: nn.Module) -> tuple[list[list[str]], list[str]]:
    """(parameter names per group, group names): ``feature_encoder``, ``feature_projection``, ``layer.<i>``."""
    layers = len(encoder.encoder.layers)
    groups: list[list[str]] = [[] for _ in range(layers + 2)]
    for name, _ in encoder.named_parameters():
        if name.startswith("encoder.layers."):
            groups[2 + int(name.split(".")[2])].append(f"encoder.{name}")
        elif name.startswith(("feature_extractor.", "masked_spec_embed")):
            groups[0].append(f"encoder.{name}")
        else:  # the feature projection, the positional convolution, the encoder's own norm
            groups[1].append(f"encoder.{name}")
    names = ["feature_encoder", "feature_projection", *[f"layer.{i}" for i in range(layers)]]
    keep = [i for i, group in enumerate(groups) if group]
    return [groups[i] for i in keep], [names[i] for i in keep]


def build_waveform_encoder(
    source: str, config, weights: str | None
) -> tuple[WaveformEncoder, int, list[list[str]], list[str], AudioConfig]:
    """(model, feature width, groups, group names, audio config) for ``hf:<source>`` with a waveform encoder's
    ``config``; ``weights`` ``imagenet`` loads the model's own, ``None`` random ones."""
    from transformers import AutoFeatureExtractor, AutoModel

    try:
        extractor = AutoFeatureExtractor.from_pretrained(source)
    except (OSError, ValueError) as err:
        reason = str(err).strip().splitlines()[0][:200]
        raise ConfigError(
            f"Expected `backbone` 'hf:{source}' to come with its feature extractor (preprocessor_config.json: the "
            f"sampling rate), but it failed: {reason}"
        ) from None
    encoder = AutoModel.from_pretrained(source) if weights == "imagenet" else AutoModel.from_config(config)
    normalize = bool(extractor.to_dict().get("do_normalize", False))
    use_mask = config.to_dict().get("feat_extract_norm", "group") == "layer"
    groups, names = waveform_groups(encoder)
    audio_config = AudioConfig(sample_rate=int(extractor.sampling_rate), max_seconds=4.0)
    return WaveformEncoder(encoder, normalize, use_mask), int(config.hidden_size), groups, names, audio_config
