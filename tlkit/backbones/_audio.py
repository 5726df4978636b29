"""Audio backbones (``audio:<name>``): a network over mono waveforms with its front end inside, as a `Backbone`.

``audio:resemblyzer`` is Resemblyzer's speaker encoder (Apache-2.0): 40-band mel spectrograms of 16 kHz audio
(25 ms windows, 10 ms hop), three LSTM layers of 256 units, and a linear layer to a 256-number embedding, ReLU'd and
L2-normed; 1.4 M parameters trained to tell speakers apart. Its weights ship in the ``resemblyzer`` wheel, so it is
tlkit's offline pretrained audio model (``pip install --no-deps resemblyzer``: its own package imports librosa and
webrtcvad, which tlkit needs not; the network and the front end are rebuilt here in torch).

The front end is part of the model (an export reads waveforms): each clip's volume is raised to -30 dBFS where it is
quieter, as Resemblyzer's preprocessing does, then turned into a power mel spectrogram as librosa computes it
(``librosa.feature.melspectrogram`` with its defaults: centred frames zero-padded, a periodic Hann window, Slaney mel
bands). Resemblyzer also cuts long silences out with a voice-activity detector; tlkit leaves clips whole.
Groups: each LSTM layer, then the projection.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tlkit.backbones.weights import load_into, read_state_dict
from tlkit.errors import ConfigError
from tlkit.input_config import AudioConfig

AUDIO_PREFIX = "audio:"
#: The audio backbones tlkit builds by name.
AUDIO_MODELS = ("resemblyzer",)


def slaney_mel_filters(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """The (n_mels, n_fft // 2 + 1) mel filter bank librosa builds by default (``htk=False``, ``norm='slaney'``,
    0 Hz to Nyquist): triangles on the Slaney mel scale (linear below 1 kHz, logarithmic above), each scaled to unit
    area."""

    def hz_to_mel(hz: np.ndarray) -> np.ndarray:
        hz = np.asarray(hz, dtype=np.float64)
        linear = hz / (200.0 / 3)
        log_part = 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
        return np.where(hz >= 1000.0, log_part, linear)

    def mel_to_hz(mel: np.ndarray) -> np.ndarray:
        linear = (200.0 / 3) * mel
        log_part = 1000.0 * np.exp((np.log(6.4) / 27.0) * (mel - 15.0))
        return np.where(mel >= 15.0, log_part, linear)

    fft_hz = np.linspace(0, sample_rate / 2, 1 + n_fft // 2)
    mel_hz = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(sample_rate / 2), n_mels + 2))
    widths = np.diff(mel_hz)
    ramps = mel_hz[:, None] - fft_hz[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_hz[2 : n_mels + 2] - mel_hz[:n_mels]))[:, None]
    return weights.astype(np.float32)


class MelSpectrogram(nn.Module):
    """Waveforms (N, T) at ``sample_rate`` to power mel spectrograms (N, frames, n_mels), librosa's way, with each
    clip's frame count from its length (``lengths``: samples of each clip before padding)."""

    def __init__(self, sample_rate: int = 16000, window_ms: int = 25, hop_ms: int = 10, n_mels: int = 40) -> None:
        super().__init__()
        self.n_fft = sample_rate * window_ms // 1000
        self.hop = sample_rate * hop_ms // 1000
        # The short-time Fourier transform as a strided convolution with the windowed DFT's cosine and sine rows:
        # the same numbers as torch.stft (7e-7 relative) in real arithmetic, which ONNX's exporter takes (it does
        # not take stft's complex output), so an exported model keeps its front end.
        window = torch.hann_window(self.n_fft, periodic=True, dtype=torch.float64)
        angles = 2 * torch.pi * torch.outer(torch.arange(self.n_fft // 2 + 1), torch.arange(self.n_fft)) / self.n_fft
        basis = torch.cat([torch.cos(angles) * window, -torch.sin(angles) * window]).float()
        self.register_buffer("dft", basis[:, None, :], persistent=False)
        filters = torch.from_numpy(slaney_mel_filters(sample_rate, self.n_fft, n_mels))
        self.register_buffer("filters", filters, persistent=False)

    def frames(self, lengths: torch.Tensor) -> torch.Tensor:
        """The spectrogram frames of clips of ``lengths`` samples (centred frames: one per hop, plus one)."""
        return lengths // self.hop + 1

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        half = self.n_fft // 2  # centred frames, zero-padded at both ends
        padded = nn.functional.pad(waveform.float()[:, None, :], (half, half))
        spectrum = nn.functional.conv1d(padded, self.dft, stride=self.hop)  # (N, 2 x freq, frames)
        real, imaginary = spectrum[:, : half + 1], spectrum[:, half + 1 :]
        power = real.square() + imaginary.square()
        return torch.matmul(self.filters, power).transpose(1, 2)


def raise_volume(waveform: torch.Tensor, lengths: torch.Tensor, target_dbfs: float = -30.0) -> torch.Tensor:
    """Each clip scaled up to ``target_dbfs`` RMS where it is quieter (Resemblyzer's ``normalize_volume`` with
    ``increase_only``), its padding left out of the RMS."""
    positions = torch.arange(waveform.shape[1], device=waveform.device)
    real = (positions[None, :] < lengths[:, None]).to(waveform.dtype)
    mean_square = (waveform.square() * real).sum(dim=1) / lengths.clamp(min=1).to(waveform.dtype)
    rms_dbfs = 10 * torch.log10(mean_square.clamp(min=1e-20))
    gain = torch.pow(10.0, ((target_dbfs - rms_dbfs) / 20).clamp(min=0))
    return waveform * gain[:, None]


class SpeakerEncoder(nn.Module):
    """Resemblyzer's network over a batch of waveforms: ``{"waveform": (N, T), "lengths": (N,)}`` to (N, 256)
    L2-normed embeddings; each clip's state is the LSTM's at its last real frame (padding does not reach it)."""

    def __init__(self, sample_rate: int = 16000, hidden: int = 256, layers: int = 3, embedding: int = 256) -> None:
        super().__init__()
        self.front_end = MelSpectrogram(sample_rate)
        self.lstm = nn.ModuleList(nn.LSTM(40 if i == 0 else hidden, hidden, batch_first=True) for i in range(layers))
        self.linear = nn.Linear(hidden, embedding)

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        waveform, lengths = batch["waveform"], batch["lengths"]
        mels = self.front_end(raise_volume(waveform, lengths))
        frames = self.front_end.frames(lengths).clamp(max=mels.shape[1])
        states = mels
        for layer in self.lstm:
            states, _ = layer(states)
        # A forward LSTM's state at a frame has read no later frame, so the top layer's output at each clip's last
        # real frame is the state Resemblyzer takes, whatever padding follows (and no packed sequence, which
        # ONNX's exporter does not take).
        last = states[torch.arange(states.shape[0], device=states.device), frames - 1]
        embedding = torch.relu(self.linear(last))
        return embedding / embedding.norm(dim=1, keepdim=True).clamp(min=1e-12)


def resemblyzer_weights() -> Path:
    """The pretrained.pt file of the installed resemblyzer wheel (found without importing the package)."""
    spec = importlib.util.find_spec("resemblyzer")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"Expected the package resemblyzer for `backbone` '{AUDIO_PREFIX}resemblyzer' (its wheel ships the "
            "weights), but it is not installed: pip install --no-deps resemblyzer."
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pretrained.pt"


def resemblyzer_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Resemblyzer's checkpoint as `SpeakerEncoder`'s state dict: its 3-layer LSTM's ``weight_ih_l<k>`` become
    layer ``k``'s own ``weight_ih_l0``."""
    state = torch.load(path, map_location="cpu", weights_only=True)["model_state"]
    renamed = {}
    for key, value in state.items():
        if key.startswith("lstm."):
            name, layer = key.removeprefix("lstm.").rsplit("_l", 1)
            renamed[f"lstm.{layer}.{name}_l0"] = value
        elif key.startswith("linear."):
            renamed[key] = value
    return renamed


def build_audio(name: str, weights: str | None) -> tuple[nn.Module, int, list[list[str]], list[str], AudioConfig]:
    """(model, feature width, groups, group names, audio config) for ``audio:<name>``: ``weights`` ``imagenet``
    (tlkit's word for "the model's own pretrained weights") loads Resemblyzer's, ``None`` leaves random ones, a
    file path loads that state dict."""
    if name not in AUDIO_MODELS:
        raise ConfigError(
            f"Expected `backbone` '{AUDIO_PREFIX}<name>' with one of {', '.join(AUDIO_MODELS)}, but got "
            f"{AUDIO_PREFIX + name!r}."
        )
    model = SpeakerEncoder()
    if weights == "imagenet":
        path = resemblyzer_weights()
        load_into(model, resemblyzer_state_dict(path), str(path))
    elif weights is not None:
        load_into(model, read_state_dict(weights), weights)
    groups = [[f"lstm.{i}.{p}" for p, _ in layer.named_parameters()] for i, layer in enumerate(model.lstm)]
    groups.append([f"linear.{p}" for p, _ in model.linear.named_parameters()])
    names = [f"lstm.{i}" for i in range(len(model.lstm))] + ["linear"]
    # 1.6 s: the partial utterances Resemblyzer was trained on (160 frames).
    return model, model.linear.out_features, groups, names, AudioConfig(sample_rate=16000, max_seconds=1.6)
