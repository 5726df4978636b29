"""Model inputs of two domains as one batch: image tensors, or waveforms with their lengths (``{"waveform": (N, T),
"lengths": (N,)}``), whose clips differ in length from domain to domain."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

Inputs = torch.Tensor | Mapping[str, torch.Tensor]


def input_count(inputs: Inputs) -> int:
    """How many samples ``inputs`` holds: a tensor's first dimension, or a dict's tensors' (their batch size)."""
    if isinstance(inputs, Mapping):
        return int(next(iter(inputs.values())).shape[0])
    return int(inputs.shape[0])


def first_inputs(inputs: Inputs, count: int) -> Inputs:
    """The first ``count`` samples of ``inputs`` (a tensor's rows, or each of a dict's tensors' rows)."""
    if isinstance(inputs, Mapping):
        return {key: value[:count] for key, value in inputs.items()}
    return inputs[:count]


def join_inputs(*parts: Inputs) -> Inputs:
    """``parts`` as one batch, in order: tensors concatenated; dicts concatenated key by key, a key's (N, T, ...)
    tensors zero-padded at the end of T to the longest (padding a clip with silence; each keeps its ``lengths``)."""
    if not isinstance(parts[0], Mapping):
        return torch.cat(parts)
    joined = {}
    for key in parts[0]:
        tensors = [part[key] for part in parts]
        if tensors[0].ndim >= 2:
            longest = max(tensor.shape[1] for tensor in tensors)
            tensors = [_pad_dim1(tensor, longest) for tensor in tensors]
        joined[key] = torch.cat(tensors)
    return joined


def _pad_dim1(tensor: torch.Tensor, length: int) -> torch.Tensor:
    missing = length - tensor.shape[1]
    if missing == 0:
        return tensor
    # F.pad's widths run from the last dimension back: zeros for every dimension after the second, then dim 1.
    return F.pad(tensor, [0, 0] * (tensor.ndim - 2) + [0, missing])
