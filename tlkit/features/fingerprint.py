"""Fingerprints: hashes that change exactly when what a feature depends on changes (weights, samples, labels)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from tlkit.protocols import Fingerprinted


def _sample_fingerprint(sample: Any) -> bytes:
    if isinstance(sample, Fingerprinted):
        return sample.fingerprint()
    if isinstance(sample, Image.Image):
        return sample.mode.encode() + str(sample.size).encode() + sample.tobytes()
    path = Path(sample)
    stat = path.stat()
    return f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()


def data_fingerprint(samples: Sequence[Any], labels: Sequence[Any]) -> str:
    """Hash of the samples (file path, size and mtime; or pixels for in-memory images) and their labels (class
    indices, or target vectors)."""
    digest = hashlib.sha256()
    for sample, label in zip(samples, labels):
        digest.update(_sample_fingerprint(sample))
        digest.update(label_bytes(label))
    return digest.hexdigest()


def label_bytes(label: Any) -> bytes:
    """A label's bytes for a fingerprint: a class index as 4 bytes, a target vector as its float32 values."""
    if isinstance(label, int):
        return label.to_bytes(4, "little", signed=True)
    return np.asarray(label, dtype=np.float32).tobytes()


def weights_fingerprint(module: nn.Module) -> str:
    """Hash of every parameter and buffer (names, shapes and values)."""
    return tensors_fingerprint(module.state_dict().items())


def tensors_fingerprint(named_tensors: Iterable[tuple[str, torch.Tensor]]) -> str:
    """Hash of named tensors (names, shapes and values), in the order given."""
    digest = hashlib.sha256()
    for name, tensor in named_tensors:
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
