"""`audio:resemblyzer`: the front end computes librosa's mel spectrogram, the network is Resemblyzer's with its
shipped weights, and a clip's embedding does not depend on the clips padded beside it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tlkit.backbones import AudioConfig, Backbone
from tlkit.backbones._audio import MelSpectrogram, resemblyzer_weights
from tlkit.errors import ConfigError

#: A 16 kHz clip (Allison saying "seven", from tlkit's bundled voices, resampled by librosa) and the mel spectrogram
#: librosa 0.11 computed of it: ``librosa.feature.melspectrogram(y=waveform, sr=16000, n_fft=400, hop_length=160,
#: n_mels=40)``, transposed to (frames, bands), as Resemblyzer's ``wav_to_mel_spectrogram`` calls it.
REFERENCE = Path(__file__).parents[1] / "data" / "librosa_mel.npz"


def test_the_front_end_is_librosas_mel_spectrogram():
    reference = np.load(REFERENCE)
    waveform = torch.from_numpy(reference["waveform"])[None]
    mel = MelSpectrogram()(waveform)[0].numpy()
    assert mel.shape == reference["mel"].shape == (83, 40)
    np.testing.assert_allclose(mel, reference["mel"], rtol=1e-4, atol=1e-5)


def test_the_network_is_resemblyzers_with_its_weights_and_reads_no_padding():
    reference = np.load(REFERENCE)
    quiet = reference["waveform"] * np.float32(0.05)  # quieter than -30 dBFS: the front end raises it
    waveform = torch.from_numpy(quiet)
    backbone = Backbone("audio:resemblyzer").eval()
    assert backbone.group_names == ["lstm.0", "lstm.1", "lstm.2", "linear"] and backbone.num_features == 256
    assert backbone.data_config == AudioConfig(sample_rate=16000, max_seconds=1.6) and backbone.reads_audio
    # Resemblyzer's own network (one 3-layer LSTM) on librosa's spectrogram of the clip at -30 dBFS, as its
    # `embed_utterance` would see it after `normalize_volume` (the clip is quieter, so it is raised).
    state = torch.load(resemblyzer_weights(), map_location="cpu", weights_only=True)["model_state"]
    lstm, linear = torch.nn.LSTM(40, 256, 3, batch_first=True), torch.nn.Linear(256, 256)
    lstm.load_state_dict({k.removeprefix("lstm."): v for k, v in state.items() if k.startswith("lstm.")})
    linear.load_state_dict({k.removeprefix("linear."): v for k, v in state.items() if k.startswith("linear.")})
    rms = float(np.sqrt(np.mean((quiet.astype(np.float64) * 32767.0) ** 2)) / 32767.0)
    gain = 10 ** ((-30 - 20 * np.log10(rms)) / 20)
    assert gain > 1
    mels = MelSpectrogram()(waveform[None] * gain)
    with torch.no_grad():
        _, (hidden, _) = lstm(mels)
        expected = torch.relu(linear(hidden[-1]))
        expected = expected / expected.norm(dim=1, keepdim=True)
        alone = backbone({"waveform": waveform[None], "lengths": torch.tensor([len(waveform)])})
        # Beside a longer clip, padded with silence: the same embedding (the LSTM stops at the clip's last frame).
        padded = torch.zeros(2, len(waveform) + 8000)
        padded[0, : len(waveform)], padded[1] = waveform, torch.randn(len(waveform) + 8000) * 0.1
        batched = backbone({"waveform": padded, "lengths": torch.tensor([len(waveform), len(waveform) + 8000])})
    torch.testing.assert_close(alone, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(batched[0], alone[0], rtol=1e-4, atol=1e-5)


def test_unknown_audio_backbones_and_dense_tasks_are_one_line():
    with pytest.raises(ConfigError, match=r"'audio:<name>' with one of resemblyzer, but got 'audio:wav2vec'"):
        Backbone("audio:wav2vec")
    with pytest.raises(ConfigError, match=r"but 'audio:resemblyzer' is an audio model: it has no feature maps"):
        Backbone("audio:resemblyzer", weights=None, feature_maps=True)
