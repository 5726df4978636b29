"""Multi-scale feature maps of an image backbone: what dense tasks (segmentation, detection) put their decoder on.

A map is the output of one stage of the network, at a stride (input pixels per map pixel) and with a number of
channels. timm models say which modules produce them (``feature_info``) and return them in one pass
(``forward_intermediates``); any other model (torchvision, a user's module) gives the outputs of its layer groups,
found with one probing pass. Of several maps at one stride (a ViT's blocks all sit at stride 16) the deepest is
kept: a decoder wants one map per scale.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from tlkit.protocols import FeatureMap


def deepest_per_stride(strides: Sequence[int]) -> list[int]:
    """Indices of the last entry of each stride, in order (input to output)."""
    keep = {stride: index for index, stride in enumerate(strides)}
    return sorted(keep.values())


def timm_maps(model: nn.Module) -> tuple[list[int], list[FeatureMap]] | None:
    """(the indices `forward_intermediates` takes, the maps) of a timm model that returns its stages, else None."""
    info = getattr(model, "feature_info", None)
    if not callable(getattr(model, "forward_intermediates", None)) or not isinstance(info, list) or not info:
        return None
    indices = deepest_per_stride([int(entry["reduction"]) for entry in info])
    return indices, [FeatureMap(int(info[i]["num_chs"]), int(info[i]["reduction"])) for i in indices]


def prune_after_maps(model: nn.Module) -> None:
    """Drop what a timm model computes after its last map (a final 1x1 convolution, the norm and pooling): no
    gradient would reach it, which DDP refuses, and unfreezing it would train nothing."""
    model.prune_intermediate_layers(prune_norm=False, prune_head=True)


def probe_group_maps(model: nn.Module, modules: Sequence[str], image_size: int) -> tuple[list[str], list[FeatureMap]]:
    """The modules among ``modules`` (each layer group's output module) whose output is a 4-D map, the deepest per
    stride, found with one pass over a blank ``image_size`` image."""
    named = dict(model.named_modules())
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = [
        named[name].register_forward_hook(
            lambda module, inputs, output, name=name: (
                shapes.__setitem__(name, tuple(output.shape)) if isinstance(output, torch.Tensor) else None
            )
        )
        for name in modules
    ]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, 3, image_size, image_size))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    four_d = [name for name in modules if len(shapes.get(name, ())) == 4]
    strides = [max(1, round(image_size / shapes[name][-1])) for name in four_d]
    chosen = deepest_per_stride(strides)
    return [four_d[i] for i in chosen], [FeatureMap(shapes[four_d[i]][1], strides[i]) for i in chosen]


def hooked_maps(model: nn.Module, modules: Sequence[str], x: torch.Tensor) -> list[torch.Tensor]:
    """The outputs of ``modules`` (in that order) from one forward pass of ``model`` on ``x``."""
    named = dict(model.named_modules())
    outputs: dict[str, torch.Tensor] = {}
    hooks = [
        named[name].register_forward_hook(lambda module, inputs, output, name=name: outputs.__setitem__(name, output))
        for name in modules
    ]
    try:
        model(x)
    finally:
        for hook in hooks:
            hook.remove()
    return [outputs[name] for name in modules]
