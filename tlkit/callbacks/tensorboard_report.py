"""`TensorBoardReport`: the images and comparisons users look for in TensorBoard, beside the scalar curves."""

from __future__ import annotations

import heapq
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch import Callback
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from torchmetrics.utilities import dim_zero_cat
from typing_extensions import override

from tlkit.callbacks._clips import clips_of, spectrogram_figure
from tlkit.callbacks._images import images_of, unnormalised
from tlkit.errors import config_error
from tlkit.input_config import AudioConfig
from tlkit.protocols import CalibrationTracking, ConfusionTracking, NamedClassifier, RequestsData
from tlkit.tasks import ECE_BINS


class TensorBoardReport(Callback):
    """Images for TensorBoard's Images tab and a metric for its HParams tab, written by rank 0.

    - ``train/augmented_batch``: the first training batch of a run as the model sees it (augmentation included),
      un-normalised: the quickest check that crops, flips and colours are what was meant.
    - ``val/confusion_matrix`` (with class names) and ``val/class_acc/<class>`` every validation: which classes are
      confused with which. Computed over every rank's validation split.
    - ``val/worst_examples``: the validation images (for audio: the clips' spectrograms, and the clips themselves in
      the Audio tab as ``val/worst_clips/<k>``) with the highest loss, each titled true -> predicted
      (probability), from rank 0's share of the first ``worst_pool`` validation images. Costs one more forward pass
      of those images.
    - ``val/reliability`` every validation: the reliability diagram of the validation probabilities (temperature-scaled
      when fitted) in 15 bins, how often a prediction of each confidence was right (top-1 for classes; how often a
      label of each probability was present, for label sets), with the ECE. Over every rank's validation split.
    - ``hp_metric``: the best value so far of the metric checkpoints select on (``val/acc``, ``val/safe_im``), so the
      HParams tab compares runs by what they achieved (Lightning leaves it at -1).

    Images are skipped for batches that are not images (text, cached features). Takes effect only with a
    TensorBoard logger; the `tlkit` command adds it as ``--report.*``.

    Args:
        train_images: how many images of the first training batch to show (0: none).
        worst_examples: how many of the worst-classified validation images to show (0: none).
        worst_pool: how many validation images (rank 0's, from the start of the split) the worst are chosen among.
        max_classes: the confusion matrix and per-class accuracies are drawn for at most this many classes.

    Examples:
        >>> trainer = Trainer(callbacks=[TensorBoardReport(worst_examples=8)])
    """

    def __init__(
        self, train_images: int = 16, worst_examples: int = 16, worst_pool: int = 1024, max_classes: int = 50
    ) -> None:
        for name, value in (
            ("train_images", train_images),
            ("worst_examples", worst_examples),
            ("worst_pool", worst_pool),
            ("max_classes", max_classes),
        ):
            if value < 0:
                raise config_error(f"report.{name}", "an integer >= 0", value)
        self.train_images, self.worst_examples, self.worst_pool = train_images, worst_examples, worst_pool
        self.max_classes = max_classes
        self._worst: list[tuple[float, int, torch.Tensor, int, int, float]] = []  # a min-heap by loss
        self._seen = 0

    # ------------------------------------------------------------------------------------------------ training
    @override
    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int):
        if self.train_images == 0 or trainer.global_step != 0 or batch_idx != 0:
            return  # the first step of a run only (a resumed run has shown its batch)
        writer = _writer(trainer)
        images = images_of(batch)
        if writer is None or images is None:
            return
        from torchvision.utils import make_grid

        shown = unnormalised(images[: self.train_images].detach().float().cpu(), trainer)
        writer.add_image("train/augmented_batch", make_grid(shown, nrow=8, padding=2), 0)

    def _log_reliability(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        metric = pl_module.val_calibration if isinstance(pl_module, CalibrationTracking) else None
        if metric is None or not metric.update_called:
            return
        # Every rank gathers (a collective), in the same place as the confusion matrix's compute below.
        confidences, accuracies = _gathered_calibration(metric)
        metric.reset()
        writer = _writer(trainer)
        if trainer.sanity_checking or writer is None or len(confidences) == 0:
            return
        writer.add_figure("val/reliability", reliability_figure(confidences, accuracies), trainer.global_step)

    def _log_best(self, trainer: pl.Trainer) -> None:
        """``hp_metric``: the best monitored value so far, this validation's included (ModelCheckpoint, which runs
        after every other callback, has not counted it yet)."""
        callback = trainer.checkpoint_callback
        if not isinstance(callback, ModelCheckpoint) or callback.monitor is None or trainer.logger is None:
            return
        values = [
            v for v in (callback.best_model_score, trainer.callback_metrics.get(callback.monitor)) if v is not None
        ]
        if values and trainer.is_global_zero:
            best = max if callback.mode == "max" else min
            trainer.logger.log_metrics({"hp_metric": float(best(float(v) for v in values))}, step=trainer.global_step)

    # ---------------------------------------------------------------------------------------------- validation
    @override
    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._worst, self._seen = [], 0

    @override
    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self.worst_examples == 0 or trainer.sanity_checking or not trainer.is_global_zero:
            return
        if dataloader_idx != len(trainer.num_val_batches) - 1:
            return  # domain adaptation validates the source first, then the target: the target's are shown
        if self._seen >= self.worst_pool or not isinstance(batch, (list, tuple)) or len(batch) != 2:
            return
        inputs, labels = batch
        clips = clips_of(inputs)
        if (images_of(inputs) is None and clips is None) or not torch.is_tensor(labels) or labels.ndim != 1:
            return
        with torch.no_grad():
            probabilities = pl_module(inputs).float().softmax(dim=1)
        losses = F.nll_loss(probabilities.clamp_min(1e-12).log(), labels, reduction="none")
        confidence, predicted = probabilities.max(dim=1)
        for i in range(min(len(labels), self.worst_pool - self._seen)):
            # An image, or a clip without its padding.
            sample = inputs[i] if clips is None else clips[0][i, : int(clips[1][i])]
            entry = (float(losses[i]), self._seen, sample.detach().float().cpu(), int(labels[i]))
            entry += (int(predicted[i]), float(confidence[i]))
            self._seen += 1
            if len(self._worst) < self.worst_examples:
                heapq.heappush(self._worst, entry)
            else:
                heapq.heappushpop(self._worst, entry)

    @override
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._log_best(trainer)
        self._log_reliability(trainer, pl_module)
        if not isinstance(pl_module, ConfusionTracking) or pl_module.confusion is None:
            return
        if not pl_module.confusion.update_called:
            return
        confusion = pl_module.confusion
        # Every rank computes (a collective); Lightning has already computed its own logged values on every rank by
        # now, so no rank is inside another collective.
        matrix = confusion.compute().cpu()
        confusion.reset()
        writer = _writer(trainer)
        if trainer.sanity_checking or writer is None:
            return
        names = _class_names(pl_module, len(matrix))
        step = trainer.global_step
        if len(names) <= self.max_classes:
            writer.add_figure("val/confusion_matrix", confusion_figure(matrix, names), step)
            totals = matrix.sum(dim=1).clamp_min(1)
            trainer.logger.log_metrics(
                {f"val/class_acc/{name}": float(matrix[i, i] / totals[i]) for i, name in enumerate(names)}, step=step
            )
        if self._worst:
            worst = sorted(self._worst, reverse=True)
            rate = _sample_rate(pl_module)
            if rate is None:
                writer.add_figure("val/worst_examples", worst_figure(worst, names, trainer), step)
                return
            # Audio: the clips' spectrograms in the Images tab, the clips themselves in the Audio tab.
            titles = [
                f"{names[label]} -> {names[predicted]} ({confidence:.2f})" for *_, label, predicted, confidence in worst
            ]
            clips = [entry[2] for entry in worst]
            writer.add_figure("val/worst_examples", spectrogram_figure(clips, titles, rate), step)
            for k, (clip, title) in enumerate(zip(clips, titles)):
                louder = max(float(clip.abs().max()), 1.0)  # a clip raised past full scale is scaled back to it
                writer.add_audio(f"val/worst_clips/{k}", (clip / louder)[None], step, sample_rate=rate)
                writer.add_text(f"val/worst_clips/{k}", title, step)


def _gathered_calibration(metric: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """A calibration-error metric's (confidences, accuracies) over every rank (a collective under DDP)."""
    with metric.sync_context():
        return dim_zero_cat(metric.confidences).float().cpu(), dim_zero_cat(metric.accuracies).float().cpu()


def reliability_figure(confidences: torch.Tensor, accuracies: torch.Tensor, bins: int = ECE_BINS) -> Any:
    """A reliability diagram: per equal-width confidence bin, the share right (bars) against the diagonal of perfect
    calibration, each bin's count under it, and the expected calibration error in the title."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    index = (confidences * bins).long().clamp(0, bins - 1)
    counts = torch.bincount(index, minlength=bins).float()
    right = torch.bincount(index, weights=accuracies, minlength=bins) / counts.clamp_min(1)
    mean_confidence = torch.bincount(index, weights=confidences, minlength=bins) / counts.clamp_min(1)
    ece = float((counts / counts.sum().clamp_min(1) * (right - mean_confidence).abs()).sum())
    centres = (torch.arange(bins) + 0.5) / bins
    figure, axes = plt.subplots(figsize=(4.5, 4.5))
    axes.bar(centres.numpy(), right.numpy(), width=1 / bins, edgecolor="black", color="tab:blue", label="observed")
    axes.plot([0, 1], [0, 1], linestyle="--", color="gray", label="perfect calibration")
    for x, n in zip(centres.tolist(), counts.tolist()):
        if n:
            axes.text(x, 0.01, str(int(n)), ha="center", va="bottom", fontsize=6, rotation=90)
    axes.set_xlim(0, 1), axes.set_ylim(0, 1)
    axes.set_xlabel("predicted probability")
    axes.set_ylabel("observed frequency")
    axes.set_title(f"ECE {100 * ece:.1f}% ({int(counts.sum())} predictions)")
    axes.legend(loc="upper left", fontsize=8)
    figure.tight_layout()
    return figure


def confusion_figure(matrix: torch.Tensor, names: list[str]) -> Any:
    """A confusion matrix (rows true, columns predicted) with counts, row-normalised colours and class names."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    n = len(names)
    rates = matrix / matrix.sum(dim=1, keepdim=True).clamp_min(1)
    figure, axes = plt.subplots(figsize=(max(4, 0.5 * n + 2), max(4, 0.5 * n + 1.5)))
    axes.imshow(rates.numpy(), cmap="Blues", vmin=0, vmax=1)
    axes.set_xticks(range(n), names, rotation=90 if n > 10 else 0)
    axes.set_yticks(range(n), names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    if n <= 20:
        for i in range(n):
            for j in range(n):
                color = "white" if rates[i, j] > 0.5 else "black"
                axes.text(j, i, int(matrix[i, j]), ha="center", va="center", fontsize=8, color=color)
    figure.tight_layout()
    return figure


def worst_figure(worst: list[tuple], names: list[str], trainer: pl.Trainer) -> Any:
    """The worst-classified images in one grid, each titled ``true -> predicted (probability)``.

    One image with text on it, not a subplot per example: drawing 16 subplots costs about a second per validation.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from torchvision.utils import make_grid

    columns = min(4, len(worst))
    rows = (len(worst) + columns - 1) // columns
    images = unnormalised(torch.stack([entry[2] for entry in worst]), trainer)
    size, pad, title = images.shape[-1], 2, max(8, images.shape[-1] // 5)
    # Room above each image for its title: pad the top of every image before gridding.
    images = F.pad(images, (0, 0, title, 0), value=1.0)
    grid = make_grid(images, nrow=columns, padding=pad, pad_value=1.0)
    figure = plt.figure(figsize=(2.4 * columns, 2.6 * rows), dpi=100)
    axes = figure.add_axes((0, 0, 1, 1))
    axes.imshow(grid.permute(1, 2, 0).numpy())
    axes.axis("off")
    for k, (_, _, _, label, predicted, confidence) in enumerate(worst):
        x = pad + (k % columns) * (size + pad) + size / 2
        y = pad + (k // columns) * (size + title + pad) + title / 2
        text = f"{names[label]} -> {names[predicted]} ({confidence:.2f})"
        axes.text(x, y, text, ha="center", va="center", fontsize=8)
    return figure


def _sample_rate(pl_module: pl.LightningModule) -> int | None:
    """The sample rate of an audio model's clips (its `DataRequest`'s `AudioConfig`), else None."""
    config = pl_module.data_request().input_config if isinstance(pl_module, RequestsData) else None
    return config.sample_rate if isinstance(config, AudioConfig) else None


def _writer(trainer: pl.Trainer) -> Any:
    """The SummaryWriter of rank 0's TensorBoard logger, or None."""
    logger = trainer.logger
    if not trainer.is_global_zero or not isinstance(logger, TensorBoardLogger):
        return None
    return logger.experiment


def _class_names(pl_module: pl.LightningModule, n: int) -> list[str]:
    names = (pl_module.class_names if isinstance(pl_module, NamedClassifier) else None) or []
    return list(names) if len(names) == n else [str(i) for i in range(n)]
