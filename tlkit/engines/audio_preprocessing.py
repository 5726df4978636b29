"""How an exported audio model's caller turns a sound file into its input, as model.json states it: the recipe
(`audio_preprocessing_spec`), the same recipe with soundfile, scipy and numpy alone (`read_clip`, `pad_clips`: what
the Audio page's snippet does), and the real recordings an export is verified on (`verification_clips`).

An audio backbone's front end (volume, spectrogram, normalisation) is inside the exported model, so the recipe is
short: decode, mix to mono, resample to the model's rate, and batch with each clip's length.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from tlkit.input_config import AudioConfig

#: How a file becomes the model's waveform, as tlkit reads it (`tlkit.datamodules.audio_files.read_audio`).
AUDIO_DECODE_RECIPE = (
    "decoded by soundfile (libsndfile: WAV, FLAC, OGG, MP3) as float32 in [-1, 1] (integer samples divided by their "
    "full scale); channels averaged to mono; resampled to sample_rate with scipy.signal.resample_poly(waveform, "
    "up=sample_rate/g, down=file_rate/g), g = gcd(sample_rate, file_rate), when the file's rate differs"
)


def audio_preprocessing_spec(config: AudioConfig) -> dict[str, Any]:
    """The JSON form of how tlkit reads a clip for evaluation (whole, never cropped) for ``config``."""
    return {
        "sample_rate": config.sample_rate,
        "channels": "mono",
        "decode": AUDIO_DECODE_RECIPE,
        "batch": "clips padded with zeros at the end to the longest of the batch; lengths holds each clip's samples",
        "training_crop_seconds": config.max_seconds,
    }


def read_clip(path: str | os.PathLike, spec: dict[str, Any]) -> np.ndarray:
    """One sound file as the exported model expects it, float32 (samples,) at the spec's rate, with soundfile,
    scipy and numpy only: model.json's recipe, as the Audio page's snippet follows it."""
    from math import gcd

    import soundfile
    from scipy.signal import resample_poly

    samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    waveform, target = samples.mean(axis=1), spec["sample_rate"]
    if rate != target:
        step = gcd(rate, target)
        waveform = resample_poly(waveform, target // step, rate // step)
    return waveform.astype(np.float32)


def pad_clips(clips: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Clips as one batch for the exported model: ``waveform`` (N, longest) zero-padded, ``lengths`` (N,) int64."""
    lengths = np.array([len(clip) for clip in clips], dtype=np.int64)
    waveform = np.zeros((len(clips), int(lengths.max())), dtype=np.float32)
    for row, clip in zip(waveform, clips):
        row[: len(clip)] = clip
    return {"waveform": waveform, "lengths": lengths}


def verification_clips(folder: str | os.PathLike | None = None, limit: int = 16) -> list[Path]:
    """Real recordings to verify on: up to ``limit`` clips under ``folder`` (any layout), else the recorded voices
    tlkit ships (every voice, the numbers spread over 0-20, 8 kHz files: resampling is part of the check)."""
    from tlkit.datamodules.audio import bundled_voices, scan_clips

    if folder is not None:
        return scan_clips(Path(folder).expanduser())[:limit]
    voices = sorted(path for path in bundled_voices().iterdir() if path.is_dir())
    per_voice = max(1, limit // len(voices))
    clips = []
    for voice in voices:
        recordings = scan_clips(voice)
        clips += recordings[:: max(1, len(recordings) // per_voice)][:per_voice]
    return clips[:limit]
