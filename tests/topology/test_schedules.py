import math

import pytest

from dstlab.errors import ConfigError
from dstlab.topology.schedules import (
    DropFraction,
    UpdateSchedule,
    check_update_window,
    count_to_replace,
)


def test_updates_happen_every_period_but_never_at_step_zero():
    s = UpdateSchedule.create(100)
    assert [t for t in range(0, 401) if s.is_update_step(t)] == [100, 200, 300, 400]


def test_start_and_end_as_fractions_or_steps():
    s = UpdateSchedule.create(10, start=0.25, end=0.75, total_steps=100)
    assert [t for t in range(101) if s.is_update_step(t)] == [30, 40, 50, 60, 70]
    s = UpdateSchedule.create(10, start=20, end=40, total_steps=100)
    assert [t for t in range(101) if s.is_update_step(t)] == [20, 30, 40]


@pytest.mark.parametrize("every", [0, -5, 2.5])
def test_update_every_must_be_positive_whole_number(every):
    with pytest.raises(ConfigError, match="update_every"):
        UpdateSchedule(every)


def test_cosine_decay_follows_the_formula():
    f = DropFraction(0.5, "cosine", 0.005, total_steps=1000)
    for t in (0, 250, 500, 1000):
        expected = 0.005 + (0.5 - 0.005) * (1 + math.cos(math.pi * t / 1000)) / 2
        assert f.at(t) == pytest.approx(expected)
    assert f.at(0) == pytest.approx(0.5) and f.at(1000) == pytest.approx(0.005)


def test_linear_and_constant_decay():
    assert DropFraction(0.4, "linear", 0.0, 100).at(50) == pytest.approx(0.2)
    assert DropFraction(0.3, "constant").at(12345) == 0.3


@pytest.mark.parametrize("f0", [0.0, 1.0, -0.2, 1.2])
def test_drop_fraction_outside_open_unit_interval(f0):
    with pytest.raises(ConfigError, match=r"drop_fraction must be a number in \(0, 1\)"):
        DropFraction(f0, "constant")


def test_count_is_ceil_of_fraction_times_active_and_capped():
    assert count_to_replace(0.5, 7) == 4
    assert count_to_replace(0.3, 10) == 3
    assert count_to_replace(1.0, 5) == 5
    assert count_to_replace(0.001, 0) == 0


def test_last_update_is_the_last_period_within_start_and_end():
    assert UpdateSchedule(800, 0, 1000).last_update() == 800
    assert UpdateSchedule(5, 0, 20).last_update() == 20
    assert UpdateSchedule(800, 900, 1000).last_update() == 0  # no update at all
    assert UpdateSchedule(800).last_update() is None


@pytest.mark.parametrize(
    ("start", "end", "refusal"),
    [
        (-0.1, 1.0, "update_start must be a fraction of training in [0, 1] or a whole step"),
        (1.5, 1.0, "update_start must be a fraction of training in [0, 1] or a whole step"),
        (0.0, 0.0, "update_end must be a fraction of training in (0, 1] or a whole step"),
        (0.8, 0.5, "update_start (0.8) must not come after update_end (0.5)."),
        (400, 300, "update_start (400) must not come after update_end (300)."),
    ],
)
def test_a_bad_update_window_is_one_sentence(start, end, refusal):
    with pytest.raises(ConfigError) as caught:
        check_update_window(start, end)
    assert str(caught.value).startswith(refusal)


def test_a_window_in_fractions_needs_the_run_length_unless_it_spans_the_run():
    assert UpdateSchedule.create(10, 0.0, 1.0).end is None
    check_update_window(500, 0.5)  # a step and a fraction: compared only once the length is known
    with pytest.raises(ConfigError, match=r"update_end=0.5 is a fraction of training, so total"):
        UpdateSchedule.create(10, 0.0, 0.5)
    with pytest.raises(ConfigError, match=r"update_start=1.0 is a fraction of training, so total"):
        UpdateSchedule.create(10, 1.0, 1.0)


def test_drop_fraction_min_cannot_exceed_drop_fraction():
    with pytest.raises(ConfigError) as caught:
        DropFraction(0.3, "constant", 0.4)
    assert str(caught.value) == (
        "drop_fraction_min must be a number in [0, drop_fraction=0.3], got 0.4."
    )
