"""Every RunConfig option with a fixed set of values is checked when the config is built, with a
did-you-mean; the values come from one place (the field metadata or the owning registry)."""

from __future__ import annotations

import dataclasses

import pytest

import dstlab
from dstlab.data import list_datasets
from dstlab.errors import ConfigError
from dstlab.models import list_models
from dstlab.run import RunConfig
from dstlab.run.config import choices
from dstlab.topology import backends, schedules, validation
from dstlab.topology.criteria import PRUNERS
from dstlab.topology.distributions import DISTRIBUTIONS

CHOICE_OPTIONS = [f.name for f in dataclasses.fields(RunConfig) if "choices" in f.metadata]


def test_a_misspelt_decay_names_the_choices_and_the_nearest_one():
    with pytest.raises(ConfigError) as caught:
        RunConfig(decay="cosin")
    assert str(caught.value) == (
        "decay must be one of cosine, linear, constant; got 'cosin' (did you mean 'cosine'?)."
    )


def test_every_option_with_fixed_values_declares_them():
    fixed = {
        "data", "model", "mode", "prune", "grow", "distribution", "decay", "selection",
        "global_normalize", "update_position", "shadow_criteria", "backend", "optimizer",
        "lr_schedule", "device",
    }  # fmt: skip
    assert fixed <= set(CHOICE_OPTIONS)


@pytest.mark.parametrize("option", CHOICE_OPTIONS)
def test_each_option_accepts_its_default_and_refuses_a_near_miss(option):
    allowed = choices(option)
    is_list = isinstance(getattr(RunConfig(), option), tuple)
    default = getattr(RunConfig(), option)
    assert set(default) <= set(allowed) if is_list else default in allowed
    value = next(a for a in allowed if isinstance(a, str)) + "x"
    with pytest.raises(ConfigError) as caught:
        RunConfig.from_dict({option: [value] if is_list else value})
    message = str(caught.value)
    assert option in message and f"got {value!r} (did you mean {value[:-1]!r}?)" in message
    assert "\n" not in message


def test_the_values_come_from_their_owners():
    assert choices("decay") == schedules.DECAYS
    assert choices("selection") == validation.SELECTIONS
    assert choices("global_normalize") == validation.NORMALIZATIONS
    assert choices("update_position") == validation.UPDATE_POSITIONS
    assert choices("backend") == tuple(backends.backend_names())
    assert choices("distribution") == tuple(DISTRIBUTIONS)
    assert choices("model") == tuple(list_models())
    assert choices("data") == tuple(list_datasets())
    assert choices("prune") == choices("shadow_criteria") == tuple(dstlab.list_pruners())
    assert choices("grow") == tuple(dstlab.list_growers())
    assert choices("lr") is None


def test_a_newly_registered_criterion_is_a_valid_option():
    with pytest.raises(ConfigError):
        RunConfig(prune="test_abs_choice")

    @dstlab.register_pruner("test_abs_choice")
    def score(weight, grad):
        return weight.abs()

    try:
        assert RunConfig(prune="test_abs_choice", shadow_criteria=("test_abs_choice",))
    finally:
        PRUNERS.unregister("test_abs_choice")


def test_none_is_shown_as_the_word_the_cli_accepts():
    with pytest.raises(ConfigError, match="global_normalize must be one of none, layer_sum"):
        RunConfig(global_normalize="nothing")
