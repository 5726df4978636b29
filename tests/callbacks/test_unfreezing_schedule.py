"""The unfreezing schedule and plateau rule as pure units: no Trainer, no fit."""

import pytest

from tlkit.backbones import Backbone
from tlkit.callbacks.unfreezing_schedule import Plateau, UnfreezingSchedule
from tlkit.errors import ConfigError

GROUPS = ["conv1+bn1", "layer1.0", "layer2.0", "layer3.0", "layer4.0"]  # test_resnet, input to output


@pytest.fixture(scope="module")
def backbone() -> Backbone:
    return Backbone("test_resnet", weights=None)


def groups_of(backbone: Backbone, names: set[str]) -> list[str]:
    """The groups whose parameters are all in ``names``."""
    return [g.name for g in backbone.layer_groups if set(g.parameter_names) <= names]


def test_gradual_schedule_phases_and_start_epochs(backbone):
    schedule = UnfreezingSchedule.from_backbone(backbone, initial_groups=1, groups_per_step=2, every_n_epochs=3)
    assert schedule.num_phases == 3 and schedule.starts == [0, 3, 6]
    assert [groups_of(backbone, schedule.trainable_parameter_names(p)) for p in range(3)] == [
        GROUPS[4:],
        GROUPS[2:],
        GROUPS,
    ]
    assert [schedule.phase_at(e) for e in range(8)] == [0, 0, 0, 1, 1, 1, 2, 2]
    assert not schedule.head_only(0)


def test_milestones_resolve_indices_names_regexes_and_all(backbone):
    schedule = UnfreezingSchedule.from_backbone(backbone, milestones={4: "all", 1: [-1], 2: ["layer3.0", r"^layer1"]})
    assert schedule.starts == [0, 1, 2, 4]  # sorted by epoch
    assert schedule.head_only(0) and not schedule.head_only(1)
    assert groups_of(backbone, schedule.trainable_parameter_names(2)) == ["layer1.0", "layer3.0", "layer4.0"]
    assert groups_of(backbone, schedule.trainable_parameter_names(3)) == GROUPS
    assert schedule.phase_at(3) == 2 and schedule.phase_at(100) == 3


def test_plateau_schedule_has_no_start_epochs(backbone):
    schedule = UnfreezingSchedule.from_backbone(backbone, groups_per_step=2)
    assert schedule.starts is None and schedule.phase_at(5) is None
    assert schedule.last_phase == 3  # head only, then 2 + 2 + 1 groups


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"milestones": {2: ["layer9"]}}, r"entry 'layer9'.*matched no group.*\(all 5\)"),
        ({"milestones": {1: [7]}}, r"but got 7\. Valid names: conv1\+bn1"),
        ({"milestones": {1: ["(unclosed"]}}, r"milestone 1 entry '\(unclosed'.*not a valid regex"),
        ({"initial_groups": 6}, r"`initial_groups` to be at most 5, the number of groups of 'test_resnet'"),
    ],
)
def test_schedule_errors_name_the_entry_and_the_valid_groups(backbone, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        UnfreezingSchedule.from_backbone(backbone, **kwargs)


@pytest.mark.parametrize(
    ("plateau", "values", "expected"),
    [
        (Plateau("min", patience=2), [1.0, 0.9, 0.95, 0.93], [False, False, False, True]),
        (Plateau("max", patience=1), [0.5, 0.6, 0.6], [False, False, True]),
        (Plateau("min", patience=1, min_delta=0.1), [1.0, 0.95], [False, True]),  # too small to count
        (Plateau("max", patience=0), [0.1], [True]),
    ],
)
def test_plateau_follows_early_stoppings_rule(plateau, values, expected):
    assert [plateau.update(v) for v in values] == expected


def test_plateau_reset_starts_afresh():
    plateau = Plateau("min", patience=1)
    plateau.update(1.0)
    plateau.reset()
    assert (plateau.best, plateau.wait) == (None, 0)
    assert plateau.update(5.0) is False  # the first value after a reset is an improvement
