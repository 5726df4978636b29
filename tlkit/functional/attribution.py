"""Why an image classifier decided: a map of each image's pixels by how much they drove the predicted class (or, for
multi-label, the most probable label), computed by Captum (`captum.attr`), not by code of tlkit's own.

Two methods, chosen by name (`METHODS`):

- ``gradcam``: Grad-CAM (Selvaraju et al. 2017), the gradient of the class's logit weighting the channels of the
  backbone's last spatial feature map (`Backbone.activation_map_module`); one forward and one backward pass, so it
  costs about a training step. Needs a backbone with feature maps (CNNs; not a ViT's tokens).
- ``occlusion``: gradient-free (Zeiler and Fergus 2014): a grey square slid over the image, each position scored by
  how much covering it lowers the class's probability; a forward pass per position (`OCCLUSION_WINDOWS` squares a
  side), slower, for any backbone.

Maps are (N, H, W) at the model's input size, each scaled to [0, 1] by its maximum (all zeros when nothing
supports the class).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

from tlkit.errors import config_error, import_optional

#: The methods `activation_maps` computes.
Method = Literal["gradcam", "occlusion"]
METHODS: tuple[str, ...] = ("gradcam", "occlusion")
#: The tasks whose outputs are scores per class, which a map explains.
EXPLAINED_TASKS = ("classification", "multilabel")
#: Occlusion's square is the image's side divided by this (a window of 8 x 8 squares, slid by half a square).
OCCLUSION_WINDOWS = 8


def check_explainable(model: Any, method: str) -> None:
    """A one-line ConfigError unless ``model`` (a strategy) can be explained by ``method``."""
    if method not in METHODS:
        raise config_error("explain", "a method of explanation", method, options=METHODS)
    if model.task.name not in EXPLAINED_TASKS:
        raise config_error("explain", "used with a classifier or a multi-label model", f"a {model.task.name} model")
    if model.backbone.reads_text or model.backbone.reads_audio:
        raise config_error("explain", "used with an image model (maps are of pixels)", "a model of texts or clips")
    if method == "gradcam" and model.backbone.activation_map_module() is None:
        raise config_error(
            "explain",
            "occlusion for a backbone without spatial feature maps (Grad-CAM needs a CNN's maps)",
            method,
            options=["occlusion"],
        )


def explained_targets(model: Any, images: torch.Tensor) -> torch.Tensor:
    """The class each image's map explains: the predicted class, or a multi-label model's most probable label."""
    with torch.no_grad():
        return model(images).argmax(dim=1)


def activation_maps(model: Any, images: torch.Tensor, targets: torch.Tensor, method: Method) -> torch.Tensor:
    """(N, H, W) maps in [0, 1] of ``images`` (N, 3, H, W, as the model takes them) for the class ``targets``."""
    attr = import_optional("captum.attr", "to explain predictions", "explain")
    size = images.shape[-2:]
    # Outside inference mode (``tlkit predict`` runs in it): the attributions need gradients or repeated passes.
    with torch.inference_mode(False), torch.enable_grad():
        inputs, targets = images.detach().clone(), targets.detach().clone()
        if method == "gradcam":
            cam = attr.LayerGradCam(model, model.backbone.activation_map_module())
            maps = cam.attribute(inputs, target=targets, relu_attributions=True)
            maps = attr.LayerAttribution.interpolate(maps, tuple(size), interpolate_mode="bilinear")[:, 0]
        else:
            side = max(2, size[-1] // OCCLUSION_WINDOWS)
            step = max(1, side // 2)
            occlusion = attr.Occlusion(lambda x: model.task.postprocess(model(x), model.calibration_temperature))
            maps = occlusion.attribute(
                inputs,
                target=targets,
                sliding_window_shapes=(3, side, side),
                strides=(3, step, step),
                baselines=0.0,  # the normalised image's mean grey
                perturbations_per_eval=16,
            ).sum(dim=1)
    maps = maps.detach().float().clamp(min=0)
    peak = maps.flatten(1).max(dim=1).values.clamp(min=1e-12)
    return maps / peak[:, None, None]


def shown_image(image: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> Image.Image:
    """A normalised (3, H, W) input as the RGB picture the model saw (resized and cropped as it was)."""
    pixels = image.detach().float().cpu() * torch.tensor(std)[:, None, None] + torch.tensor(mean)[:, None, None]
    return Image.fromarray((pixels.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy())


def map_image(activation_map: torch.Tensor) -> Image.Image:
    """A (H, W) map in [0, 1] as an 8-bit greyscale image (255: the strongest evidence)."""
    return Image.fromarray((activation_map.cpu().numpy() * 255).round().astype(np.uint8), mode="L")


def overlay_map(image: Image.Image, activation_map: torch.Tensor, alpha: float = 0.5) -> Image.Image:
    """``image`` with the map drawn over it in a blue (weak) to red (strong) heat colour."""
    strength = activation_map.cpu().numpy()[..., None]
    heat = np.concatenate([strength, 1 - np.abs(2 * strength - 1), 1 - strength], axis=-1) * 255
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    weight = alpha * strength  # weak evidence leaves the picture as it is
    return Image.fromarray(((1 - weight) * pixels + weight * heat).round().astype(np.uint8))


def mass_inside(activation_maps_: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Each map's share of its total inside its (H, W) boolean mask: 1 when all evidence is on the object."""
    total = activation_maps_.flatten(1).sum(dim=1).clamp(min=1e-12)
    return (activation_maps_ * masks).flatten(1).sum(dim=1) / total
