"""Audio clips as users' recorders write them, made at test time with soundfile, and a tiny speech encoder saved
as `save_pretrained` saves the Hub's."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def tone(seconds: float, rate: int, hz: float, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    wave = (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)
    return np.stack([wave] * channels, axis=1) if channels > 1 else wave


def write_clips(root: Path) -> Path:
    """Two classes of tones as users' recorders write them: 44.1 kHz stereo WAV, 8 kHz FLAC."""
    import soundfile

    for name, hz in (("high", 880.0), ("low", 220.0)):
        (root / name).mkdir(parents=True)
        for i in range(6):
            soundfile.write(root / name / f"{i}.wav", tone(0.5 + 0.1 * i, 44100, hz * (1 + 0.01 * i), 2), 44100)
            soundfile.write(root / name / f"{i}.flac", tone(0.4, 8000, hz), 8000)
    return root


def tiny_wav2vec2(folder: Path, norm: str = "layer") -> Path:
    """A 2-layer wav2vec2 with random weights and its feature extractor, saved as `save_pretrained` saves them."""
    import torch
    import transformers

    config = transformers.Wav2Vec2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        conv_dim=(16, 16),
        conv_stride=(5, 4),
        conv_kernel=(10, 8),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        feat_extract_norm=norm,
        do_stable_layer_norm=norm == "layer",
    )
    torch.manual_seed(0)
    transformers.Wav2Vec2Model(config).save_pretrained(folder)
    transformers.Wav2Vec2FeatureExtractor(sampling_rate=16000, do_normalize=True).save_pretrained(folder)
    return folder
