"""`EmbeddingProjector`: source and target features in TensorBoard's projector, to see whether the domains align."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from typing_extensions import override

from tlkit.callbacks._images import framed, images_of, unnormalised
from tlkit.errors import config_error
from tlkit.functional import first_inputs, input_count
from tlkit.protocols import DomainValidation, FeatureExtractor, NamedClasses

#: Frame colours of the projector's thumbnails, by domain (matplotlib's tab10 orange and blue; then the rest of it).
DOMAIN_COLOURS = {"source": (1.0, 0.498, 0.055), "target": (0.122, 0.467, 0.706)}
OTHER_COLOURS = ((0.173, 0.627, 0.173), (0.839, 0.153, 0.157), (0.580, 0.404, 0.741), (0.549, 0.337, 0.294))
THUMBNAIL_SIZE, FRAME = 32, 4


class EmbeddingProjector(Callback):
    """At the end of fit, writes validation features of each domain to TensorBoard's embedding projector.

    Metadata per point: the domain and the class name. The projector opens with every point drawn as its image in a
    frame of its domain's colour (source orange, target blue), so whether the domains mix is visible at once, before
    any "Color by" choice (the projector's default is no colour). Needs a TensorBoard logger, a model with
    ``extract_features`` and a datamodule with ``domain_val_dataloaders`` (tlkit's domain-adaptation strategies and
    datamodules); does nothing otherwise. Runs on rank 0 only. Every domain-adaptation strategy adds it by default
    (``configure_callbacks``).

    Args:
        samples_per_domain: validation samples embedded per domain (the first ones, in loader order); images are
            drawn as their thumbnails, clips and texts as TensorBoard's default points.

    Examples:
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
        features, metadata, thumbnails = [], [], []
        was_training = pl_module.training
        pl_module.eval()
        with torch.no_grad():
            for index, (domain, loader) in enumerate(datamodule.domain_val_dataloaders().items()):
                colour = DOMAIN_COLOURS.get(domain, OTHER_COLOURS[index % len(OTHER_COLOURS)])
                seen = 0
                for x, y in loader:
                    x = first_inputs(x, self.samples_per_domain - seen)
                    if images_of(x) is not None:
                        thumbnails.append(framed(unnormalised(x.float().cpu(), trainer), colour, THUMBNAIL_SIZE, FRAME))
                    features.append(pl_module.extract_features(move_data_to_device(x, pl_module.device)).float().cpu())
                    count = input_count(x)
                    metadata += [[domain, classes[int(c)] if classes else str(int(c))] for c in y[:count]]
                    seen += count
                    if seen >= self.samples_per_domain:
                        break
        pl_module.train(was_training)
        if features:
            logger.experiment.add_embedding(
                torch.cat(features),
                metadata=metadata,
                metadata_header=["domain", "class"],
                # Thumbnails only when every point has one (image domains); TensorBoard draws sprites by default.
                label_img=torch.cat(thumbnails) if len(thumbnails) == len(features) else None,
                tag="features",
                global_step=trainer.global_step,
            )
