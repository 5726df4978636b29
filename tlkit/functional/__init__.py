"""Pure loss and score functions: domain adaptation, model selection without target labels, transferability,
fine-tuning regularizers; and attribution maps of a model's predictions (`tlkit.functional.attribution`)."""

from tlkit.functional.alignment import coral_loss, gaussian_kernels, mmd_loss
from tlkit.functional.batches import first_inputs, input_count, join_inputs
from tlkit.functional.calibration import fit_temperature
from tlkit.functional.collapse import collapsed, marginal_entropy, predicted_classes, top_class_share
from tlkit.functional.entropy import class_balance_loss, entropy, information_maximization_loss, mcc_loss
from tlkit.functional.gradient_reversal import grad_reverse, warm_start_lambda
from tlkit.functional.pseudo_labels import align_distribution, centroid_pseudo_labels
from tlkit.functional.regularization import batch_spectral_shrinkage, l2_penalty, l2_sp_distance
from tlkit.functional.transferability import (
    h_score,
    ledoit_wolf_covariance,
    leep,
    logme,
    logme_evidence,
    logme_targets,
    nce,
)
from tlkit.functional.validators import (
    below_reference,
    bnm_score,
    class_ami_score,
    consensus_agreement,
    im_score,
    image_thumbnails,
    pixel_ami_score,
    safe_im_score,
    safe_im_value,
    snd_score,
)

__all__ = [
    "align_distribution",
    "batch_spectral_shrinkage",
    "below_reference",
    "centroid_pseudo_labels",
    "class_ami_score",
    "class_balance_loss",
    "bnm_score",
    "collapsed",
    "consensus_agreement",
    "coral_loss",
    "entropy",
    "first_inputs",
    "fit_temperature",
    "gaussian_kernels",
    "grad_reverse",
    "h_score",
    "ledoit_wolf_covariance",
    "leep",
    "logme",
    "logme_evidence",
    "logme_targets",
    "im_score",
    "image_thumbnails",
    "input_count",
    "information_maximization_loss",
    "join_inputs",
    "l2_penalty",
    "l2_sp_distance",
    "marginal_entropy",
    "mcc_loss",
    "mmd_loss",
    "nce",
    "pixel_ami_score",
    "predicted_classes",
    "safe_im_score",
    "safe_im_value",
    "snd_score",
    "top_class_share",
    "warm_start_lambda",
]
