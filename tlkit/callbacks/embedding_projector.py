"""`EmbeddingProjector`: source and target features in TensorBoard's projector, to see whether the domains align."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from typing_extensions import override

from tlkit.errors import config_error
from tlkit.protocols import DomainValidation, FeatureExtractor, NamedClasses


class EmbeddingProjector(Callback):
    """At the end of fit, writes validation features of each domain to TensorBoard's embedding projector.

    Metadata per point: the domain and the class name. Needs a TensorBoard logger, a model with ``extract_features``
    and a datamodule with ``domain_val_dataloaders`` (tlkit's domain-adaptation strategies and datamodules); does
    nothing otherwise. Runs on rank 0 only. Every domain-adaptation strategy adds it by default
    (``configure_callbacks``).

    Args:
        samples_per_domain: validation images embedded per domain (the first ones, in loader order).

    Example:
        >>> trainer = Trainer(callbacks=[EmbeddingProjector(samples_per_domain=500)])
    """

    def __init__(self, samples_per_domain: int = 300) -> None:
        if samples_per_domain < 1:
            raise config_error("samples_per_domain", "an integer >= 1", samples_per_domain)
        self.samples_per_domain = samples_per_domain

    @override
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        logger, datamodule = trainer.logger, trainer.datamodule
        if not (
            isinstance(logger, TensorBoardLogger)
            and trainer.is_global_zero
            and isinstance(datamodule, DomainValidation)
            and isinstance(pl_module, FeatureExtractor)
        ):
            return
        classes = datamodule.class_names() if isinstance(datamodule, NamedClasses) else None
        features, metadata = [], []
        was_training = pl_module.training
        pl_module.eval()
        with torch.no_grad():
            for domain, loader in datamodule.domain_val_dataloaders().items():
                seen = 0
                for x, y in loader:
                    x = x[: self.samples_per_domain - seen].to(pl_module.device)
                    features.append(pl_module.extract_features(x).float().cpu())
                    metadata += [[domain, classes[int(c)] if classes else str(int(c))] for c in y[: len(x)]]
                    seen += len(x)
                    if seen >= self.samples_per_domain:
                        break
        pl_module.train(was_training)
        if features:
            logger.experiment.add_embedding(
                torch.cat(features),
                metadata=metadata,
                metadata_header=["domain", "class"],
                tag="features",
                global_step=trainer.global_step,
            )
