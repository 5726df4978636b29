"""`Adapter`: parameter-efficient fine-tuning of a backbone through the peft library (LoRA, DoRA, LoHa, LoKr).

peft injects the adapter layers into the backbone's own module tree in place (``conv.base_layer`` keeps the pretrained
layer, ``conv.lora_A.default`` / ``conv.lora_B.default`` hold the update), so parameter names stay readable and each
adapter parameter still belongs to the layer group of the layer it adapts: discriminative learning rates, gradual
unfreezing and warm-up work on adapters exactly as on full layers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from torch import nn

from tlkit.errors import ConfigError, closest, config_error, import_optional

AdapterMethod = Literal["lora", "dora", "loha", "lokr"]
ADAPTER_METHODS = ("lora", "dora", "loha", "lokr")
#: The peft adapter name tlkit uses; one adapter per backbone.
ADAPTER_NAME = "default"


@dataclass(frozen=True)
class Adapter:
    """Which peft adapter to put on which backbone layers; only the adapters (and the new head) train.

    Args:
        method: ``lora`` (Hu et al. 2021), ``dora`` (LoRA with a learned magnitude, Liu et al. 2024), ``loha``
            (Hadamard product of two low-rank pairs) or ``lokr`` (Kronecker product).
        rank: the adapters' rank.
        alpha: scale of the update, which is multiplied by ``alpha / rank`` (peft's ``lora_alpha`` / ``alpha``).
        dropout: dropout on the adapter's input (LoRA, DoRA), or the probability of skipping an adapted module in a
            step (LoHa, LoKr).
        target_modules: regular expressions matched, as in peft, against whole module names or their end after a
            dot (``qkv`` matches every ``blocks.<i>.attn.qkv``; ``blocks\\.[0-5]\\..*`` only the first six blocks);
            empty means every Linear layer and every ungrouped Conv2d. A pattern that matches no module is an error
            listing names that would.
        checkpoint: ``full`` saves every weight; ``adapter_only`` leaves the frozen pretrained weights out of
            checkpoints (rebuilt from ``weights`` on load and checked against a fingerprint), so a task's checkpoint
            holds only adapters, head and normalization statistics.

    Examples:
        >>> from tlkit.strategies import FineTuning
        >>> adapter = Adapter(rank=4, target_modules=["qkv"])
        >>> model = FineTuning("test_vit", weights=None, num_classes=3, adapter=adapter)
        >>> sorted({n.split(".")[-3] for n, p in model.backbone.named_parameters() if p.requires_grad})
        ['lora_A', 'lora_B']
    """

    method: AdapterMethod = "lora"
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=list)
    checkpoint: Literal["full", "adapter_only"] = "full"

    def __post_init__(self) -> None:
        if self.method not in ADAPTER_METHODS:
            raise config_error("adapter.method", f"one of {', '.join(ADAPTER_METHODS)}", self.method)
        if self.rank < 1:
            raise config_error("adapter.rank", "an integer >= 1", self.rank)
        if self.alpha <= 0:
            raise config_error("adapter.alpha", "a number > 0", self.alpha)
        if not 0.0 <= self.dropout < 1.0:
            raise config_error("adapter.dropout", "in [0, 1)", self.dropout)
        if self.checkpoint not in ("full", "adapter_only"):
            raise config_error("adapter.checkpoint", "'full' or 'adapter_only'", self.checkpoint)
        for pattern in self.target_modules:
            try:
                re.compile(pattern)
            except re.error as err:
                raise config_error("adapter.target_modules", f"regular expressions ({err})", pattern) from None


def adaptable_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Every module an adapter can wrap, by full name: Linear and Conv2d layers.

    peft builds an adapter's own convolutions from the wrapped layer's class and its stride and padding attributes,
    so it cannot wrap a Conv2d subclass that pads in its own forward (timm's ``Conv2dSame``, the stem and stride-2
    convolutions of the ``tf_*`` models): LoHa and LoKr compute a wrongly padded update and recent peft refuses
    LoRA on it. Leaving them out for every method keeps a run's targets the same whichever peft is installed.
    """
    return {
        name: m
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and type(m).forward is nn.Conv2d.forward)
    }


def resolve_targets(adapter: Adapter, model: nn.Module, model_name: str) -> list[str]:
    """The full names of the modules ``adapter`` wraps in ``model``; a pattern that matches none is a ConfigError."""
    candidates = adaptable_modules(model)
    if not adapter.target_modules:
        # A grouped convolution (depthwise, in every EfficientNet/MobileNet block) cannot be merged back by peft and
        # takes LoRA only at ranks divisible by its groups: the default leaves them out.
        return [n for n, m in candidates.items() if not (isinstance(m, nn.Conv2d) and m.groups > 1)]
    targets: list[str] = []
    for pattern in adapter.target_modules:
        # As in peft, a name matches when the pattern matches it whole or from a dot on (``qkv``: every ``*.qkv``).
        anchored = re.compile(rf"(?:.*\.)?(?:{pattern})")
        matched = [name for name in candidates if anchored.fullmatch(name)]
        if not matched:
            other = [name for name in dict(model.named_modules()) if name and anchored.fullmatch(name)]
            why = f" (it matches {', '.join(other[:3])}, which {adapter.method} cannot wrap)" if other else ""
            leaves = dict.fromkeys(name.rpartition(".")[2] for name in candidates)
            suggestions = closest(pattern, leaves) or closest(pattern, candidates) or _sample(list(candidates))
            raise ConfigError(
                "Expected each of `adapter.target_modules` to match the name (or its end) of a module of "
                f"{model_name!r} that {adapter.method} can wrap (Linear, Conv2d), but {pattern!r} matches none{why}. "
                f"Names that would: {', '.join(suggestions)}."
            )
        targets += [name for name in matched if name not in targets]
    return targets


def _sample(names: list[str], k: int = 6) -> list[str]:
    """A few names spread over the model, so the suggestion shows its naming scheme from input to output."""
    if len(names) <= k:
        return names
    return [names[round(i * (len(names) - 1) / (k - 1))] for i in range(k)]


def inject(adapter: Adapter, model: nn.Module, model_name: str) -> nn.Module:
    """Wrap ``model``'s target modules with ``adapter`` in place and freeze everything else in it.

    Returns the peft tuner, which `merge` needs; the model keeps its identity and gains the adapter parameters.
    """
    peft = import_optional("peft", "for `adapter`", "adapters")

    targets = resolve_targets(adapter, model, model_name)
    if adapter.method in ("lora", "dora"):
        config = peft.LoraConfig(
            r=adapter.rank,
            lora_alpha=adapter.alpha,
            lora_dropout=adapter.dropout,
            target_modules=targets,
            use_dora=adapter.method == "dora",
        )
    else:
        config_class = peft.LoHaConfig if adapter.method == "loha" else peft.LoKrConfig
        config = config_class(
            r=adapter.rank, alpha=adapter.alpha, module_dropout=adapter.dropout, target_modules=targets
        )
    tuner_class = {"lora": peft.LoraModel, "dora": peft.LoraModel, "loha": peft.LoHaModel, "lokr": peft.LoKrModel}
    try:
        return tuner_class[adapter.method](model, config, ADAPTER_NAME)
    except ValueError as err:  # e.g. LoRA on a grouped convolution at a rank its groups do not divide
        raise ConfigError(f"Expected `adapter` to apply to {model_name!r}, but peft refused it: {err}") from None
