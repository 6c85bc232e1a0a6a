"""The primitive checks every option goes through: one sentence with the option, the allowed
interval and the value; NaN, inf and true/false are never numbers in range."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dstlab.errors import ConfigError
from dstlab.topology.checks import check_flag, check_names, check_number


@pytest.mark.parametrize(
    ("kwargs", "value", "refusal"),
    [
        ({"low": 0, "high": 1, "low_open": True}, 0, "x must be a number in (0, 1], got 0."),
        ({"low": 0, "high": 1, "high_open": True}, 1.0, "x must be a number in [0, 1), got 1.0."),
        ({"low": 0}, math.inf, "x must be a number in [0, inf), got inf."),
        ({"low": 0}, math.nan, "x must be a number in [0, inf), got nan."),
        ({"low": 0}, True, "x must be a number in [0, inf), got True."),
        ({"low": 0}, "3", "x must be a number in [0, inf), got '3'."),
        ({"low": 1, "whole": True}, 2.0, "x must be a whole number in [1, inf), got 2.0."),
        ({"high": 0.5, "high_name": "y"}, 0.7, "x must be a number in (-inf, y=0.5], got 0.7."),
    ],
)
def test_a_value_outside_its_interval_is_one_sentence(kwargs, value, refusal):
    with pytest.raises(ConfigError) as caught:
        check_number("x", value, **kwargs)
    assert str(caught.value) == refusal


@pytest.mark.parametrize(
    ("kwargs", "value"),
    [
        ({"low": 0, "high": 1, "low_open": True}, 1),
        ({"low": 0, "high": 1, "high_open": True}, 0.0),
        ({"low": 1, "whole": True}, np.int64(3)),
        ({"low": 0}, np.float32(0.5)),
    ],
)
def test_a_value_inside_its_interval_passes(kwargs, value):
    check_number("x", value, **kwargs)


def test_flags_and_name_lists():
    check_flag("x", False)
    check_names("x", ("a", "b"))
    with pytest.raises(ConfigError, match=r"^x must be true or false, got 1\.$"):
        check_flag("x", 1)
    with pytest.raises(ConfigError, match=r"^x must be a list of names, got 'ab'\.$"):
        check_names("x", "ab")
    with pytest.raises(ConfigError, match=r"^each of x must be a name, got 3\.$"):
        check_names("x", ["a", 3])
