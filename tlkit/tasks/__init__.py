"""Tasks: what a model predicts and how it is judged (`Classification`, the default; `MultiLabel`; `Regression`;
`Segmentation`; `Detection`).

Every strategy takes one as ``task`` (``--model.init_args.task MultiLabel``)."""

from tlkit.tasks.base import ECE_BINS, Mode, Task, direction_of
from tlkit.tasks.classification import Classification
from tlkit.tasks.detection import Detection
from tlkit.tasks.heads import HeadOptions
from tlkit.tasks.multi_label import MultiLabel
from tlkit.tasks.regression import Regression
from tlkit.tasks.segmentation import Segmentation

__all__ = [
    "ECE_BINS",
    "Classification",
    "Detection",
    "HeadOptions",
    "Mode",
    "MultiLabel",
    "Regression",
    "Segmentation",
    "Task",
    "direction_of",
]
