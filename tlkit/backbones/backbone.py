"""`Backbone`: the one adapter every strategy uses, whatever the model's origin."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from tlkit.backbones import adapters
from tlkit.backbones._builders import build, group_names, pool_features
from tlkit.backbones._text import TextPooling
from tlkit.backbones.adapters import Adapter
from tlkit.backbones.feature_maps import FeatureMap, hooked_maps, probe_group_maps, prune_after_maps, timm_maps
from tlkit.errors import ConfigError, closest
from tlkit.input_config import AudioConfig, InputConfig, TextConfig

GroupRef = int | str


@dataclass
class LayerGroup:
    """A named slice of the backbone that is frozen, unfrozen and given a learning rate as one unit."""

    name: str
    index: int  # 0 = nearest the input
    #: The parameters that can train: all of the group's, or only its adapters' when the backbone has an `Adapter`.
    parameters: list[nn.Parameter]
    parameter_names: list[str]
    batch_norms: list[_BatchNorm]
    #: The outermost module that holds the group's last parameter and no parameter of another group: its output is
    #: the group's output (`Backbone.group_outputs`).
    output_module: str


class Backbone(nn.Module):
    """A pretrained feature extractor with ordered layer groups, built from a name or any ``nn.Module``.

    Args:
        name: a timm model name (``tf_efficientnet_lite0``, ``resnet50``, ``vit_small_patch16_224``), a torchvision
            one prefixed with ``torchvision:`` (``torchvision:resnet18``), or a Hugging Face text model, by Hub name
            or local folder, prefixed with ``hf:`` (``hf:bert-base-uncased``, ``hf:gpt2``; needs ``tlkit[text]``): its
            groups are the embeddings and each transformer layer, its features its token states pooled (see
            ``text_pooling``), its input a tokenized batch (a speech encoder over waveforms, ``hf:`` with a
            wav2vec2, HuBERT, WavLM or data2vec-audio config, reads waveforms as audio models do); or an audio
            model prefixed with ``audio:``
            (``audio:resemblyzer``, whose weights ship in the resemblyzer wheel): its input a batch of waveforms
            (``{"waveform", "lengths"}``). Ignored when ``model`` is given.
        weights: ``None`` for random init, ``imagenet`` for the library's default pretrained weights (a text
            encoder's own), or a path to a local state-dict file.
        model: any ``nn.Module`` returning (N, C) or (N, C, H, W) features; its top-level children become the groups.
        num_features: the width of ``model``'s features; inferred with one forward pass when omitted.
        data_config: override the input size, mean and std the datamodules use.
        source_classifier: with ``model``: the module that maps its features to the source task's logits, read by
            the LEEP and NCE transferability scores (named backbones with ImageNet weights keep their own).
        text_pooling: a text model's token states as one vector: ``mean`` over the real tokens, the ``last`` real
            token's, or ``auto``: ``last`` for a decoder-only model (GPT-2, Llama: only the last token has read the
            whole text), ``mean`` for an encoder.
        feature_maps: also return multi-scale feature maps (`feature_maps`, described by `feature_info`), for a
            dense task's decoder; a timm model loses what it computes after its last map (the final 1x1
            convolution), so its pooled features are its last map's. Image backbones only.

    Examples:
        >>> backbone = Backbone("resnet18", weights=None)
        >>> backbone.group_names[:2]
        ['conv1+bn1', 'layer1']
        >>> backbone.freeze()  # everything
        >>> backbone.unfreeze(["layer4"])  # by name, or by index: unfreeze([-1])
    """

    def __init__(
        self,
        name: str = "tf_efficientnet_lite0",
        weights: str | None = "imagenet",
        model: nn.Module | None = None,
        num_features: int | None = None,
        data_config: InputConfig | None = None,
        source_classifier: nn.Module | None = None,
        text_pooling: TextPooling = "auto",
        feature_maps: bool = False,
    ) -> None:
        super().__init__()
        built = build(name, weights, model, num_features, data_config, text_pooling)
        if model is not None:
            built.source_classifier = source_classifier
        #: The maps `feature_maps` returns, input to output (empty unless built with ``feature_maps``).
        self.feature_info: list[FeatureMap] = []
        self._map_indices: list[int] | None = None  # timm's `forward_intermediates` indices, else None
        self._map_modules: list[str] = []  # the modules whose outputs are the maps, for any other model
        if feature_maps:
            self._find_feature_maps(built, name)
        self.name = name if model is None else type(model).__name__
        self.model = built.model
        self.num_features = built.num_features
        self.data_config = built.data_config
        self._built_groups = built.groups
        self._group_labels = built.group_labels
        #: The peft adapter on the backbone (`add_adapter`), else None.
        self.adapter: Adapter | None = None
        self._adapter_tuner: tuple[nn.Module, ...] = ()  # peft's tuner, kept out of the module tree for `merge_adapter`
        self._adapter_parameters: set[str] = set()
        self.layer_groups = self._make_groups(built.groups)
        # Held in a tuple so it is no submodule: never trained, not in checkpoints or the weights' fingerprint.
        self._source_classifier = (built.source_classifier,)
        # Indices of groups whose BatchNorm layers stay in eval mode (running statistics frozen) while training.
        self._bn_eval: set[int] = set()

    def _find_feature_maps(self, built, name: str) -> None:
        if isinstance(built.data_config, (TextConfig, AudioConfig)):
            kind = "a text" if isinstance(built.data_config, TextConfig) else "an audio"
            raise ConfigError(
                f"Expected an image backbone for a dense task (segmentation, detection), but {name!r} is {kind} "
                "model: it has no feature maps."
            )
        found = timm_maps(built.model)
        if found is not None:
            prune_after_maps(built.model)
            self._map_indices, self.feature_info = found
            kept = {n for n, _ in built.model.named_parameters()}
            built.groups = [kept_names for names in built.groups if (kept_names := [n for n in names if n in kept])]
            built.num_features = self.feature_info[-1].channels
            return
        # Other models: the layer groups' outputs (their output modules, as `_make_groups` finds them).
        modules = dict(built.model.named_modules())
        outputs = [_output_module(names, modules) for names in built.groups]
        self._map_modules, self.feature_info = probe_group_maps(built.model, outputs, built.data_config.image_size)
        if not self.feature_info:
            raise ConfigError(
                f"Expected a backbone whose layer groups output (N, C, H, W) maps for a dense task, but {name!r} "
                "has none."
            )

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The (N, C, H, W) maps `feature_info` describes, input to output, from one forward pass."""
        if self._map_indices is not None:
            return list(self.model.forward_intermediates(x, indices=self._map_indices, intermediates_only=True))
        if not self._map_modules:
            raise ConfigError(f"Expected a backbone built with `feature_maps=True`, but {self.name!r} was not.")
        return hooked_maps(self.model, self._map_modules, x)

    def _make_groups(self, built_groups: list[list[str]]) -> list[LayerGroup]:
        groups = self._current_names(built_groups)
        params = dict(self.model.named_parameters())
        group_of = {name: i for i, names in enumerate(groups) for name in names}
        batch_norms: list[list[_BatchNorm]] = [[] for _ in groups]
        last = 0
        for module_name, module in self.model.named_modules():
            own = [f"{module_name}.{p}" if module_name else p for p, _ in module.named_parameters(recurse=False)]
            if own and own[0] in group_of:
                last = group_of[own[0]]
            if isinstance(module, _BatchNorm):
                batch_norms[last].append(module)  # a BN without affine params belongs with the layer before it
        modules = dict(self.model.named_modules())
        result = []
        for i, (name, names) in enumerate(zip(self._group_labels or group_names(built_groups), groups)):
            trainable = [n for n in names if not self.adapter or n in self._adapter_parameters]
            output = _output_module(names, modules)
            result.append(LayerGroup(name, i, [params[n] for n in trainable], trainable, batch_norms[i], output))
        return result

    def _current_names(self, built_groups: list[list[str]]) -> list[list[str]]:
        """``built_groups`` (parameter names when the model was built) as the model's parameters are named now.

        An adapter renames the layer it wraps (``conv.weight`` becomes ``conv.base_layer.weight``) and adds its own
        parameters inside it (``conv.lora_A.default.weight``): each belongs to the group of the nearest enclosing
        module that held parameters at build time.
        """
        group_of_module = {name.rpartition(".")[0]: i for i, names in enumerate(built_groups) for name in names}
        groups: list[list[str]] = [[] for _ in built_groups]
        for name, _ in self.model.named_parameters():
            path = name.split(".")[:-1]
            while ".".join(path) not in group_of_module:
                path.pop()  # ends at "" for parameters held by the model itself, which build() grouped
            groups[group_of_module[".".join(path)]].append(name)
        return groups

    # ----------------------------------------------------------------------------------------------------- adapters
    def add_adapter(self, adapter: Adapter) -> None:
        """Wrap the layers ``adapter`` targets with peft adapters; from then on only adapters train in every group.

        The pretrained weights are frozen for good; freezing, unfreezing and learning rates by group apply to the
        group's adapter parameters. Call it before the optimizer is built.
        """
        if self.adapter is not None:
            raise ConfigError(f"Expected a backbone without an adapter, but {self.name!r} already has {self.adapter}.")
        tuner = adapters.inject(adapter, self.model, self.name)
        self.adapter, self._adapter_tuner = adapter, (tuner,)
        self._adapter_parameters = {n for n, p in self.model.named_parameters() if p.requires_grad}
        self.layer_groups = self._make_groups(self._built_groups)

    def merge_adapter(self) -> None:
        """Fold the adapters into the pretrained weights (for inference and export): the backbone becomes a plain
        model again, computing the same outputs. The optimizer's parameters are no longer the model's afterwards."""
        if self.adapter is None:
            return
        self._adapter_tuner[0].merge_and_unload()
        self.adapter, self._adapter_tuner, self._adapter_parameters = None, (), set()
        self.layer_groups = self._make_groups(self._built_groups)

    @property
    def frozen_pretrained_parameters(self) -> dict[str, nn.Parameter]:
        """With an adapter: the pretrained parameters it leaves frozen for good (empty without one)."""
        if self.adapter is None:
            return {}
        return {n: p for n, p in self.model.named_parameters() if n not in self._adapter_parameters}

    @property
    def source_classifier(self) -> nn.Module | None:
        """The pretrained model's own classifier on the pooled features (``weights: imagenet``), else None.

        Transferability scores that read the source task's predictions (LEEP, NCE) use it.
        """
        return self._source_classifier[0]

    def group_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The pooled output of every layer group, input to output, from one forward pass (eval-mode use: the
        caller chooses train/eval and grad). The last entry equals ``self(x)``."""
        modules = dict(self.model.named_modules())
        outputs: list[torch.Tensor] = []
        hooks = [
            modules[group.output_module].register_forward_hook(
                lambda module, inputs, output: outputs.append(_pool(output))
            )
            for group in self.layer_groups[:-1]
        ]
        try:
            final = self(x)
        finally:
            for hook in hooks:
                hook.remove()
        return [*outputs, final]

    @property
    def group_names(self) -> list[str]:
        """Layer group names, input to output."""
        return [g.name for g in self.layer_groups]

    def resolve_groups(self, groups: GroupRef | Iterable[GroupRef] | None) -> list[LayerGroup]:
        """Groups by index (negative counts from the output end) or name; ``None`` means all."""
        if groups is None:
            return list(self.layer_groups)
        if isinstance(groups, (int, str)):
            groups = [groups]
        resolved = []
        by_name = {g.name: g for g in self.layer_groups}
        n = len(self.layer_groups)
        for ref in groups:
            if isinstance(ref, int) and -n <= ref < n:
                resolved.append(self.layer_groups[ref])
            elif isinstance(ref, str) and ref in by_name:
                resolved.append(by_name[ref])
            else:
                options = closest(ref, by_name) if isinstance(ref, str) else []
                raise ConfigError(
                    f"Expected a layer group of backbone {self.name!r} (an index in [{-n}, {n - 1}] or a name), "
                    f"but got {ref!r}. Valid names: {', '.join(options or self.group_names)}."
                )
        return resolved

    def freeze(self, groups: GroupRef | Sequence[GroupRef] | None = None, bn_eval: bool = True) -> None:
        """Stop training ``groups`` (all by default); their BatchNorm statistics freeze too unless ``bn_eval=False``."""
        for group in self.resolve_groups(groups):
            for p in group.parameters:
                p.requires_grad_(False)
            if bn_eval:
                self._bn_eval.add(group.index)
        self.train(self.training)

    def unfreeze(self, groups: GroupRef | Sequence[GroupRef] | None = None, bn_eval: bool = False) -> None:
        """Train ``groups`` (all by default); ``bn_eval=True`` keeps their BatchNorm statistics frozen anyway."""
        for group in self.resolve_groups(groups):
            for p in group.parameters:
                p.requires_grad_(True)
            if bn_eval:
                self._bn_eval.add(group.index)
            else:
                self._bn_eval.discard(group.index)
        self.train(self.training)

    def set_trainable_parameters(self, names: set[str], freeze_bn: bool = False) -> None:
        """Train exactly the parameters named in ``names`` (names as in ``LayerGroup.parameter_names``).

        A group with no trainable parameter keeps its BatchNorm in eval mode; ``freeze_bn`` keeps every group's
        BatchNorm in eval mode.
        """
        for group in self.layer_groups:
            for name, p in zip(group.parameter_names, group.parameters):
                p.requires_grad_(name in names)
            if freeze_bn or not self.is_trainable(group):
                self._bn_eval.add(group.index)
            else:
                self._bn_eval.discard(group.index)
        self.train(self.training)

    def is_trainable(self, group: LayerGroup) -> bool:
        return any(p.requires_grad for p in group.parameters)

    @property
    def trainable_group_names(self) -> list[str]:
        return [g.name for g in self.layer_groups if self.is_trainable(g)]

    def train(self, mode: bool = True) -> Backbone:
        super().train(mode)
        if mode:
            for index in self._bn_eval:
                for bn in self.layer_groups[index].batch_norms:
                    bn.eval()
        return self

    def forward(self, x: torch.Tensor | Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Pooled features, shape (N, num_features), from images or (text backbones) a tokenized batch; with feature
        maps, the last map's average."""
        if self.feature_info:
            return self.feature_maps(x)[-1].mean(dim=(2, 3))
        return pool_features(self.model(x))

    @property
    def reads_text(self) -> bool:
        """Whether the backbone's input is tokenized text (its data config is a `TextConfig`)."""
        return isinstance(self.data_config, TextConfig)

    @property
    def reads_audio(self) -> bool:
        """Whether the backbone's input is a batch of waveforms (its data config is an `AudioConfig`)."""
        return isinstance(self.data_config, AudioConfig)

    def check_input_size(self, image_size: int) -> None:
        """Raise a ConfigError if the model cannot run on ``image_size`` x ``image_size`` inputs.

        Runs one forward pass on a blank image (eval mode, no grad; each size is checked once), so the problem shows
        before training rather than as a shape error in the first step: a ViT with a fixed input size, or an input
        smaller than the network's total downsampling.
        """
        checked = self.__dict__.setdefault("_checked_sizes", set())
        if image_size in checked:
            return
        parameter = next(self.parameters(), None)
        # In the weights' dtype: under `precision: 16-true` or `bf16-true` the model is already half precision.
        blank = torch.zeros(
            1,
            3,
            image_size,
            image_size,
            device=parameter.device if parameter is not None else None,
            dtype=parameter.dtype if parameter is not None and parameter.is_floating_point() else None,
        )
        was_training = self.training
        try:
            self.eval()
            with torch.no_grad():
                self(blank)
        except Exception as err:  # noqa: BLE001 (any failure means this size does not work)
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ConfigError(
                f"Expected `image_size` to be a size {self.name!r} accepts (its default is "
                f"{self.data_config.image_size}), but got {image_size}: the model fails on it ({reason[:160]})."
            ) from err
        finally:
            self.train(was_training)
        checked.add(image_size)

    def activation_map_module(self) -> nn.Module | None:
        """The module whose output is the backbone's last spatial feature map, (N, C, H, W): the output of the last
        layer group that has one, which class activation maps (Grad-CAM) weight by the gradient; None for a
        backbone without spatial maps (a transformer's tokens, text, audio). Found once, by a forward pass on a
        blank image of the backbone's size (eval mode, no grad)."""
        if self.reads_text or self.reads_audio:
            return None
        if "_activation_map_name" not in self.__dict__:
            modules = dict(self.model.named_modules())
            spatial: dict[str, bool] = {}

            def recorder(name: str):
                return lambda module, inputs, output: spatial.__setitem__(
                    name, isinstance(output, torch.Tensor) and output.dim() == 4
                )

            hooks = [
                modules[group.output_module].register_forward_hook(recorder(group.output_module))
                for group in self.layer_groups
            ]
            parameter = next(self.parameters(), None)
            size = self.data_config.image_size
            blank = torch.zeros(1, 3, size, size, device=parameter.device if parameter is not None else None)
            was_training = self.training
            try:
                self.eval()
                with torch.no_grad():
                    self(blank)
            finally:
                self.train(was_training)
                for hook in hooks:
                    hook.remove()
            names = [group.output_module for group in self.layer_groups if spatial.get(group.output_module)]
            self.__dict__["_activation_map_name"] = names[-1] if names else None
        name = self.__dict__["_activation_map_name"]
        return None if name is None else self.model.get_submodule(name)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, num_features={self.num_features}, groups={len(self.layer_groups)}"


def _pool(output: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) maps and (N, tokens, C) sequences averaged to (N, C); (N, C) as it is."""
    if isinstance(output, (tuple, list)):
        output = output[0]
    if output.ndim == 4:
        return output.mean(dim=(2, 3))
    if output.ndim == 3:
        return output.mean(dim=1)
    return output.flatten(1)


def _output_module(parameter_names: list[str], modules: dict[str, nn.Module]) -> str:
    """The outermost module that holds the last of ``parameter_names`` and no parameter outside them."""
    own = set(parameter_names)
    path = parameter_names[-1].split(".")[:-1]
    for depth in range(1, len(path) + 1):
        name = ".".join(path[:depth])
        if {f"{name}.{p}" for p, _ in modules[name].named_parameters()} <= own:
            return name
    return ".".join(path)
