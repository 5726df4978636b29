"""Audio batches for TensorBoard: the clips a batch holds, and a grid of their spectrograms."""

from __future__ import annotations

from typing import Any

import torch


def clips_of(batch: Any) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(waveforms (N, T), lengths (N,)) of an audio batch's inputs (``{"waveform", "lengths"}``), or None."""
    if isinstance(batch, dict) and torch.is_tensor(batch.get("waveform")) and torch.is_tensor(batch.get("lengths")):
        return batch["waveform"], batch["lengths"]
    return None


def spectrogram_figure(clips: list[torch.Tensor], titles: list[str], sample_rate: int) -> Any:
    """The clips' spectrograms (dB, 25 ms windows) in a grid of 4 columns, each titled."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    columns = min(4, len(clips))
    rows = (len(clips) + columns - 1) // columns
    figure, axes = plt.subplots(rows, columns, figsize=(3 * columns, 2.2 * rows), dpi=100, squeeze=False)
    window = max(16, sample_rate * 25 // 1000)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k >= len(clips):
            continue
        ax.specgram(clips[k].numpy(), NFFT=window, Fs=sample_rate, noverlap=window * 3 // 5, cmap="magma")
        ax.set_title(titles[k], fontsize=8)
    figure.tight_layout()
    return figure
