"""Text backbones: a Hugging Face model (``hf:<name or folder>``) as a `Backbone` with ordered layer groups.

An encoder's token states (BERT, RoBERTa, MiniLM) are mean-pooled over the attention mask (BERT's pooler is left
out: sentence encoders such as all-MiniLM-L6-v2 never trained it). A decoder-only model (GPT-2, Llama and the like)
attends only to earlier tokens, so only its last real token has read the whole text: that token's state is its
feature by default. Decoders usually ship no padding token; the end-of-text token pads their batches (on the right,
where causal attention never looks back at it). Groups: the embeddings, then one group per transformer layer.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from tlkit.backbones._hf_audio import SPECTROGRAM_ENCODERS, WAVEFORM_ENCODERS, build_waveform_encoder
from tlkit.backbones.weights import load_into, read_state_dict
from tlkit.errors import ConfigError
from tlkit.input_config import AudioConfig, TextConfig

HF_PREFIX = "hf:"
#: The inputs a text encoder reads from a tokenized batch (others a tokenizer may add are ignored).
ENCODER_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
#: How token states become one feature vector: ``mean`` over the real tokens, the ``last`` real token's, or ``auto``
#: (``last`` for a decoder-only model, ``mean`` otherwise).
TextPooling = Literal["auto", "mean", "last"]


class TextEncoder(nn.Module):
    """A Hugging Face model whose output is its last hidden states pooled over the attention mask: (N, H).

    Args:
        encoder: a ``transformers`` base model (``AutoModel``), without its pooler.
        pooling: ``mean`` over the real tokens, or the ``last`` real token's state (batches padded on the right).
    """

    def __init__(self, encoder: nn.Module, pooling: Literal["mean", "last"] = "mean") -> None:
        super().__init__()
        self.encoder = encoder
        self.pooling = pooling

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        inputs = {k: batch[k] for k in ENCODER_INPUTS if k in batch}
        hidden = self.encoder(**inputs).last_hidden_state
        if self.pooling == "last":
            last = batch["attention_mask"].sum(dim=1).clamp(min=1) - 1  # right padding: the last real position
            return hidden[torch.arange(len(hidden), device=hidden.device), last]
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


def is_decoder_only(config) -> bool:
    """Whether a transformers config describes a decoder-only model: one transformers builds as a causal LM but
    never as a masked LM (BERT can be built as either, GPT-2 and Llama only as the first), with no encoder."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    model_type = config.model_type
    return (
        model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
        and model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES
        and not config.is_encoder_decoder
    )


def _give_padding(tokenizer, source: str) -> None:
    """Pad with the end-of-text token (else the unknown token) when the tokenizer has no padding token, on the
    right: a causal model's real tokens never attend to what follows them, so right padding changes no feature."""
    if tokenizer.pad_token is None:
        stand_in = tokenizer.eos_token or tokenizer.unk_token
        if stand_in is None:
            raise ConfigError(
                f"Expected the tokenizer of {HF_PREFIX + source!r} to have a padding, end-of-text or unknown token "
                "to pad batches with, but it has none; add one to the tokenizer (pad_token) and save it."
            )
        tokenizer.pad_token = stand_in
    tokenizer.padding_side = "right"


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' load report (the dropped pooler's weights show as unused) and progress bars."""
    from transformers.utils import logging

    level, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(level)
        if bars:
            logging.enable_progress_bar()


def _layers(encoder: nn.Module) -> tuple[str, nn.ModuleList]:
    """The encoder's transformer layers: its longest ModuleList (``encoder.layer`` in BERT, ``transformer.layer``
    in DistilBERT, ``layers`` elsewhere)."""
    lists = [(name, m) for name, m in encoder.named_modules() if isinstance(m, nn.ModuleList) and len(m)]
    if not lists:
        raise ConfigError(
            f"Expected a transformer encoder with a list of layers, but {type(encoder).__name__} has none."
        )
    return max(lists, key=lambda item: len(item[1]))


def text_groups(encoder: nn.Module, prefix: str = "encoder.") -> tuple[list[list[str]], list[str]]:
    """Parameter names per layer group and the groups' names: what comes before the first layer (``embeddings``),
    then ``layer.<i>`` for each layer; parameters after the last layer (a final norm) join the last group."""
    layers_name, layers = _layers(encoder)
    n = len(layers)
    groups: list[list[str]] = [[] for _ in range(n + 1)]
    before, after = set(), set()
    current = 0
    for name, _ in encoder.named_parameters():
        if name.startswith(f"{layers_name}."):
            current = int(name[len(layers_name) + 1 :].split(".")[0]) + 1
            groups[current].append(prefix + name)
        elif current == 0:
            groups[0].append(prefix + name)
            before.add(name.split(".")[0])
        else:
            groups[n].append(prefix + name)
            after.add(name.split(".")[0])
    names = ["+".join(sorted(before)) or "inputs", *[f"layer.{i}" for i in range(n)]]
    if after:
        names[-1] += "+" + "+".join(sorted(after))
    keep = [i for i, group in enumerate(groups) if group]
    return [groups[i] for i in keep], [names[i] for i in keep]


def build_text(
    source: str, weights: str | None, pooling: TextPooling = "auto"
) -> tuple[nn.Module, int, list[list[str]], list[str], TextConfig | AudioConfig]:
    """(model, feature width, groups, group names, input config) for ``hf:<source>``: a text model, or a speech
    encoder over waveforms (`tlkit.backbones._hf_audio`), as its config says.

    ``weights``: ``imagenet`` (tlkit's word for "the library's pretrained weights") loads the model's own, ``None``
    builds it from its config with random weights, a file path loads that state dict. ``pooling``: see
    `TextPooling` (text models).
    """
    try:
        from transformers import AutoConfig, AutoModel, AutoTokenizer
    except ImportError:
        raise ConfigError(
            f"Expected the package transformers for backbone {HF_PREFIX + source!r}, but it is not installed: "
            "pip install 'tlkit[text]'."
        ) from None
    where = "folder" if Path(source).expanduser().is_dir() else "Hugging Face Hub name"
    try:
        with _quiet_transformers():
            config = AutoConfig.from_pretrained(source)
            if config.model_type in WAVEFORM_ENCODERS:
                encoder, width, groups, names, audio_config = build_waveform_encoder(source, config, weights)
                if weights not in (None, "imagenet"):
                    load_into(encoder, read_state_dict(weights), weights)
                return encoder, width, groups, names, audio_config
            if config.model_type in SPECTROGRAM_ENCODERS:
                raise ConfigError(
                    f"Expected `backbone` {HF_PREFIX + source!r} to be a text model or a speech encoder over "
                    f"waveforms ({', '.join(WAVEFORM_ENCODERS)}), but it is {config.model_type!r}, which reads "
                    "spectrograms: not supported yet."
                )
            tokenizer = AutoTokenizer.from_pretrained(source)
            encoder = _encoder(AutoModel, config, source if weights == "imagenet" else None)
    except ConfigError:
        raise
    except (OSError, ValueError) as err:
        reason = str(err).strip().splitlines()[0][:200]
        raise ConfigError(
            f"Expected `backbone` {HF_PREFIX + source!r} to name a Hugging Face model ({where}) that transformers "
            f"loads, but it failed: {reason}"
        ) from None
    if weights not in (None, "imagenet"):
        load_into(encoder, read_state_dict(weights), weights)
    _give_padding(tokenizer, source)
    if pooling == "auto":
        pooling = "last" if is_decoder_only(config) else "mean"
    groups, names = text_groups(encoder)
    limits = [n for n in (tokenizer.model_max_length, config.to_dict().get("max_position_embeddings")) if n]
    max_length = min([512, *[int(n) for n in limits]])
    text_config = TextConfig(tokenizer=tokenizer, max_length=max_length)
    return TextEncoder(encoder, pooling), int(config.hidden_size), groups, names, text_config


def _encoder(auto_model, config, pretrained: str | None) -> nn.Module:
    """The base model without its pooler where the architecture allows (BERT, RoBERTa): an unused pooler would get
    no gradient, which DDP reports as an error."""
    for kwargs in ({"add_pooling_layer": False}, {}):
        try:
            if pretrained is not None:
                return auto_model.from_pretrained(pretrained, **kwargs)
            return auto_model.from_config(config, **kwargs)
        except TypeError:
            continue
    raise AssertionError("unreachable")
