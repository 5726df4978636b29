"""The source-only reference of a domain-adaptation run, and what a user is told about it at the end of `fit`.

A domain-adaptation run can end worse on its target than the model trained on the source alone (negative transfer),
most often because its target predictions collapse onto a few classes. `DomainModule` keeps the scores of its
unadapted model (the validation of its source-only epochs, or SHOT's source model) as the run's reference, logs them
beside every later validation, and at the end of fit says in one line each when the predictions collapsed and when
no adapted epoch beat the reference (the checkpoint choice then falls back to it).
"""

from __future__ import annotations

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from tlkit.functional import (
    bnm_score,
    class_ami_score,
    im_score,
    marginal_entropy,
    pixel_ami_score,
    predicted_classes,
    snd_score,
    top_class_share,
)
from tlkit.functional.collapse import collapsed

#: The per-epoch values a run records (and the checkpoint keeps), by metric name; all are on the target validation
#: split and need no target label.
RECORDED = (
    "val/im",
    "val/snd",
    "val/bnm",
    "val/safe_im",
    "val/class_ami",
    "val/pixel_ami",
    "val/target_top_class_share",
    "val/target_predicted_classes",
    "val/target_marginal_entropy",
    "val/source_acc",
)


class ReferenceRecorder(Callback):
    """Hands every validation's synchronised values to the module (`DomainModule.record_validation`).

    A callback, not a module hook: Lightning runs callbacks' ``on_validation_end`` before ModelCheckpoint's (it
    orders checkpoint callbacks last) and the module's after, so only here does the epoch's checkpoint carry what
    the epoch measured.
    """

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = trainer.callback_metrics
        pl_module.record_validation({name: float(metrics[name]) for name in RECORDED if name in metrics})


#: What ``val/safe_im`` compares with (`tlkit.functional.below_reference`'s keys), from the recorded names.
REFERENCE_SCORES = {"im": "val/im", "predicted_classes": "val/target_predicted_classes", "source_acc": "val/source_acc"}


def reference_scores(reference: dict[str, float] | None) -> dict[str, float] | None:
    """The reference's values ``val/safe_im`` compares with, from what `ReferenceRecorder` recorded of it."""
    if reference is None:
        return None
    return {key: reference[name] for key, name in REFERENCE_SCORES.items() if name in reference}


def label_free_scores(
    probabilities: torch.Tensor, features: torch.Tensor, thumbnails: torch.Tensor | None
) -> dict[str, float]:
    """What a validation records, computed here from one model's target validation probabilities, the features its
    head classified and the images' thumbnails (`tlkit.functional.image_thumbnails`; None for clips and texts, whose
    validation has no ``val/pixel_ami``; SHOT's source model, scored before training)."""
    scores = {
        "val/im": im_score(probabilities),
        "val/snd": snd_score(probabilities),
        "val/bnm": bnm_score(probabilities),
        "val/class_ami": class_ami_score(features, probabilities),
        "val/target_top_class_share": top_class_share(probabilities),
        "val/target_predicted_classes": predicted_classes(probabilities),
        "val/target_marginal_entropy": marginal_entropy(probabilities),
    }
    if thumbnails is not None:
        scores["val/pixel_ami"] = pixel_ami_score(thumbnails, probabilities)
    return {name: float(value) for name, value in scores.items()}


def collapsed_classes(row: dict[str, float], reference: dict[str, float] | None, num_classes: int) -> int | None:
    """The number of classes the predictions of ``row`` collapsed onto, or None when they did not collapse."""
    predicted = row.get("val/target_predicted_classes")
    if predicted is None:
        return None
    spread = reference.get("val/target_predicted_classes", num_classes) if reference else num_classes
    return int(predicted) if collapsed(predicted, spread) else None


def end_of_fit_report(
    history: list[dict[str, float]],
    reference: dict[str, float] | None,
    reference_label: str,
    num_classes: int,
    monitor: str | None,
    mode: str,
    adapts_to_target: bool = True,
) -> list[str]:
    """What a user should read at the end of fit, one line each: when the target predictions collapsed (negative
    transfer where the run adapts to the target, a source model that does not carry over where it does not), and
    when no adapted epoch scored above the source-only reference on the checkpoint's ``monitor``."""
    lines = []
    adapted = [row for row in history if not row.get("reference")]
    collapse = next(((row, n) for row in adapted if (n := collapsed_classes(row, reference, num_classes))), None)
    if collapse is not None:
        row, n = collapse
        spread = (
            f"; the source-only reference spread over {int(reference['val/target_predicted_classes'])}"
            if (reference and "val/target_predicted_classes" in reference)
            else ""
        )
        reading = "a sign of negative transfer" if adapts_to_target else "the source model does not carry over"
        lines.append(
            f"target predictions collapsed onto {n} of {num_classes} classes after epoch {int(row['epoch'])} (90% "
            f"of the target validation predictions{spread}): {reading}; see val/target_* in TensorBoard"
        )
    scored = [row[monitor] for row in adapted if monitor in row] if monitor else []
    if reference is not None and monitor in reference and scored:
        best = max(scored) if mode == "max" else min(scored)
        beaten = best > reference[monitor] if mode == "max" else best < reference[monitor]
        if not beaten:
            lines.append(
                f"no adapted epoch scored above the source-only reference on {monitor} (best {best:.4f}, "
                f"{reference_label} {reference[monitor]:.4f})"
            )
    return lines
