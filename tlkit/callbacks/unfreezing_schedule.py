"""`UnfreezingSchedule` and `Plateau`: which parameters train in each phase, and when a phase ends; no Trainer needed.

`ProgressiveUnfreezing` applies them to a model during a fit; research code can build and inspect a schedule alone:

    >>> schedule = UnfreezingSchedule.from_backbone(backbone, every_n_epochs=2)
    >>> schedule.phase_at(epoch=5), schedule.trainable_parameter_names(1)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from tlkit.backbones import Backbone
from tlkit.errors import ConfigError, closest, config_error

GroupSpec = int | str
Milestones = dict[int, list[GroupSpec] | Literal["all"]]


class UnfreezingSchedule:
    """The parameter names each phase adds to training, and (epoch schedules) the epoch each phase starts at.

    Phase 0 trains the head and the backbone's top ``initial_groups`` groups; every later phase adds parameters.

    Args:
        phases: parameter names each phase makes trainable, phase 0 first.
        starts: the epoch each phase starts at (``starts[0] == 0``), or None when phases end on a plateau.
    """

    def __init__(self, phases: list[set[str]], starts: list[int] | None = None) -> None:
        if starts is not None and len(starts) != len(phases):
            raise ValueError(f"Expected one start epoch per phase ({len(phases)}), but got {len(starts)}.")
        self.phases, self.starts = phases, starts

    @classmethod
    def from_backbone(
        cls,
        backbone: Backbone,
        initial_groups: int = 0,
        groups_per_step: int = 1,
        every_n_epochs: int | None = None,
        milestones: Milestones | None = None,
    ) -> UnfreezingSchedule:
        """Resolve a schedule against ``backbone``'s layer groups (milestone entries: indices, names, regexes)."""
        groups = backbone.layer_groups
        n = len(groups)
        if initial_groups > n:
            raise config_error(
                "initial_groups", f"at most {n}, the number of groups of {backbone.name!r}", initial_groups
            )
        phases = [{name for g in groups[n - initial_groups :] for name in g.parameter_names}]
        if milestones:
            ordered = sorted(milestones.items())
            phases += [_resolve_milestone(backbone, spec, epoch) for epoch, spec in ordered]
            return cls(phases, [0] + [epoch for epoch, _ in ordered])
        below = groups[: n - initial_groups][::-1]  # next to unfreeze first
        for start in range(0, len(below), groups_per_step):
            phases.append({name for g in below[start : start + groups_per_step] for name in g.parameter_names})
        starts = [p * every_n_epochs for p in range(len(phases))] if every_n_epochs else None
        return cls(phases, starts)

    @property
    def num_phases(self) -> int:
        return len(self.phases)

    @property
    def last_phase(self) -> int:
        return self.num_phases - 1

    def trainable_parameter_names(self, phase: int) -> set[str]:
        """Every parameter name that trains in ``phase`` (its own and all earlier phases')."""
        return set().union(*self.phases[: phase + 1])

    def head_only(self, phase: int) -> bool:
        """Whether no backbone parameter trains in ``phase``."""
        return not self.trainable_parameter_names(phase)

    def phase_at(self, epoch: int) -> int | None:
        """The phase an epoch schedule is in at ``epoch``; None for a plateau schedule."""
        if self.starts is None:
            return None
        return max(p for p, start in enumerate(self.starts) if start <= epoch)


def _resolve_milestone(backbone: Backbone, spec: list[GroupSpec] | str | int, epoch: int) -> set[str]:
    """Parameter names a milestone entry refers to."""
    all_names = [n for g in backbone.layer_groups for n in g.parameter_names]
    if spec == "all":
        return set(all_names)
    if isinstance(spec, (int, str)):
        spec = [spec]
    names: set[str] = set()
    for entry in spec:
        if isinstance(entry, int) or entry in backbone.group_names:
            (group,) = backbone.resolve_groups([entry])
            names.update(group.parameter_names)
            continue
        try:
            pattern = re.compile(entry)
        except re.error as err:
            raise ConfigError(
                f"Expected milestone {epoch} entry {entry!r} to be a group index, group name or parameter regex, "
                f"but it is not a valid regex ({err}). Valid group names: {', '.join(backbone.group_names)}."
            ) from err
        matched = {n for n in all_names if pattern.search(n)}
        if not matched:
            suggestions = closest(entry, backbone.group_names)
            hint = f" Closest: {', '.join(suggestions)}." if suggestions else ""
            raise ConfigError(
                f"Expected milestone {epoch} entry {entry!r} to be a group index, group name or parameter regex, "
                f"but it matched no group and no parameter. Valid group names (all "
                f"{len(backbone.group_names)}): {', '.join(backbone.group_names)}.{hint}"
            )
        names |= matched
    return names


@dataclass
class Plateau:
    """Whether a monitored value has stopped improving: ``patience`` checks in a row without an improvement of more
    than ``min_delta`` (EarlyStopping's rule).

    Args:
        mode: whether the value should go ``min`` or ``max``.
        patience: checks without improvement that make a plateau.
        min_delta: smallest change that counts as an improvement.

    Examples:
        >>> plateau = Plateau("min", patience=1)
        >>> [plateau.update(v) for v in (1.0, 0.5, 0.6)]
        [False, False, True]
    """

    mode: Literal["min", "max"] = "min"
    patience: int = 2
    min_delta: float = 0.0
    best: float | None = None
    wait: int = 0

    def update(self, value: float) -> bool:
        """Record one check of the monitored value; return whether the plateau is reached."""
        improved = self.best is None or (
            value < self.best - self.min_delta if self.mode == "min" else value > self.best + self.min_delta
        )
        if improved:
            self.best, self.wait = value, 0
        else:
            self.wait += 1
        return self.wait >= self.patience

    def reset(self) -> None:
        """Start afresh (a new phase)."""
        self.best, self.wait = None, 0
