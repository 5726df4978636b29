"""Audio clips as users' recorders write them, made at test time with soundfile."""

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
