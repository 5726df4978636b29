"""How an exported model is judged against the checkpoint it came from: each output within a tolerance of the kind
``torch.testing.assert_close`` and ONNX Runtime's own tests use, ``|exported - expected| <= atol + rtol x |expected|``
per output kind (an absolute 1e-4 on every output would refuse a sound export of large values and accept a wrong one
of tiny probabilities), then what users rely on, which each task says (`tlkit.tasks.Task.check_export`): the same top
class, the same label set, the same boxes, the same mask. The largest differences are reported either way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Tolerance:
    """``|exported - expected| <= atol + rtol x |expected|``, elementwise."""

    rtol: float
    atol: float

    def scaled(self, factor: float) -> Tolerance:
        return Tolerance(self.rtol * factor, self.atol * factor)

    def bound(self, expected: np.ndarray) -> np.ndarray:
        return self.atol + self.rtol * np.abs(expected)

    def describe(self) -> str:
        return f"|difference| <= {self.atol:g} + {self.rtol:g} x |value|"


#: Probabilities (classes, labels, pixels' classes, a detection's class scores): float32 through another runtime's
#: kernels moves a logit by about 1e-6 relative, a probability by less than 1e-4.
PROBABILITIES = Tolerance(rtol=1e-3, atol=1e-4)


@dataclass(frozen=True)
class ExportCheck:
    """How closely an export reproduced the checkpoint on the verification images.

    Attributes:
        max_abs_difference: the largest |exported - expected| over every output.
        max_rel_difference: the largest |exported - expected| / |expected| (over outputs not 0).
        criterion: what was required, in words.
        problem: what failed it, in words; None when the export passed.
    """

    max_abs_difference: float
    max_rel_difference: float
    criterion: str
    problem: str | None = None

    @property
    def passed(self) -> bool:
        return self.problem is None


def differences(exported: np.ndarray, expected: np.ndarray) -> tuple[float, float]:
    """(largest absolute, largest relative) difference."""
    absolute = np.abs(exported.astype(np.float64) - expected.astype(np.float64))
    magnitude = np.abs(expected.astype(np.float64))
    relative = np.divide(absolute, magnitude, out=np.zeros_like(absolute), where=magnitude > 0)
    return float(absolute.max(initial=0.0)), float(relative.max(initial=0.0))


def outside(exported: np.ndarray, expected: np.ndarray, tolerance: Tolerance, what: str) -> str | None:
    """``"3 of 160 probabilities are outside it (by up to 2.1e-04)"``, or None when every value is within."""
    excess = np.abs(exported.astype(np.float64) - expected.astype(np.float64)) - tolerance.bound(expected)
    count = int((excess > 0).sum())
    if not count:
        return None
    return f"{count} of {excess.size} {what} are outside it (by up to {float(excess.max()):.2g})"


def clear_top(values: np.ndarray, tolerance: Tolerance, axis: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(each row's top index along ``axis``, whether its lead over the runner-up exceeds what the tolerance lets
    two values move: a top that close may flip between runtimes without either being wrong)."""
    ordered = np.sort(values, axis=axis)
    best, runner_up = np.take(ordered, -1, axis=axis), np.take(ordered, -2, axis=axis)
    return values.argmax(axis=axis), best - runner_up > 2 * tolerance.bound(best)


def top_changed(exported: np.ndarray, expected: np.ndarray, tolerance: Tolerance, axis: int = 1) -> np.ndarray:
    """Where the export's top index along ``axis`` differs from the checkpoint's clear one (`clear_top`): another
    top class, another class at a pixel, another class for a box."""
    top, clear = clear_top(expected, tolerance, axis)
    return (exported.argmax(axis=axis) != top) & clear


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of the boxes paired row by row, (K, 4) x1, y1, x2, y2 each."""
    width = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    height = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    intersection = width * height
    area = lambda boxes: (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])  # noqa: E731
    union = area(a) + area(b) - intersection
    return np.divide(intersection, union, out=np.ones_like(intersection), where=union > 0)
