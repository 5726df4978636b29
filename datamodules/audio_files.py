"""Audio files as an audio backbone reads them: WAV, FLAC, OGG (and MP3) decoded by soundfile, mixed to mono,
resampled to the backbone's rate; a file that cannot be used is named in one line before training."""

from __future__ import annotations

from math import gcd
from pathlib import Path
from typing import BinaryIO

import numpy as np

from tlkit.errors import import_optional

#: What soundfile (libsndfile) decodes; MP3 needs libsndfile 1.1 or later, which soundfile's wheels bundle.
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".mp3")


def _soundfile():
    return import_optional("soundfile", "to read audio files", "audio")


def audio_problem(path: Path) -> str | None:
    """Why ``path`` cannot be used (not an audio file by its suffix, unreadable, or no samples), read from its
    header; None when it can."""
    if path.suffix.lower() not in AUDIO_EXTENSIONS:
        return f"not an audio file ({', '.join(AUDIO_EXTENSIONS)})"
    return header_problem(str(path))


def header_problem(source: str | BinaryIO) -> str | None:
    """Why an audio file (a path, or an open binary file such as a dataset row's bytes) cannot be used: unreadable,
    or no samples, read from its header; None when it can."""
    soundfile = _soundfile()
    try:
        info = soundfile.info(source)
    except (RuntimeError, soundfile.LibsndfileError, OSError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return f"not an audio file soundfile reads ({reason})"
    return "empty (no samples)" if info.frames == 0 else None


def read_audio(source: str | Path | BinaryIO, sample_rate: int) -> np.ndarray:
    """An audio file's samples (a path, or an open binary file such as a dataset row's bytes) as float32 in
    [-1, 1], its channels averaged to mono, resampled to ``sample_rate`` (polyphase filtering, scipy's
    ``resample_poly``)."""
    samples, rate = _soundfile().read(
        str(source) if isinstance(source, (str, Path)) else source, dtype="float32", always_2d=True
    )
    return resample(samples.mean(axis=1), rate, sample_rate)


def resample(waveform: np.ndarray, rate: int, sample_rate: int) -> np.ndarray:
    """``waveform`` at ``rate`` Hz resampled to ``sample_rate`` Hz (unchanged when they are equal)."""
    if rate == sample_rate:
        return waveform.astype(np.float32, copy=False)
    from scipy.signal import resample_poly

    step = gcd(rate, sample_rate)
    return resample_poly(waveform, sample_rate // step, rate // step).astype(np.float32)
