import math

import pytest

from dstlab import layer_densities
from dstlab.errors import ConfigError

MLP = {"fc1.weight": (1024, 3072), "fc2.weight": (512, 1024), "fc3.weight": (10, 512)}


def _total_active(shapes, densities):
    return sum(densities[n] * math.prod(s) for n, s in shapes.items())


def test_erk_matches_the_study_for_the_cifar_mlp():
    d = layer_densities(MLP, 0.05, "erk")
    assert d["fc1.weight"] == pytest.approx(0.0413, abs=1e-3)
    assert d["fc2.weight"] == pytest.approx(0.0929, abs=1e-3)
    assert d["fc3.weight"] == 1.0


@pytest.mark.parametrize("method", ["uniform", "er", "erk"])
@pytest.mark.parametrize("density", [0.01, 0.05, 0.2, 0.5, 0.9])
def test_total_active_count_equals_the_target(method, density):
    shapes = {**MLP, "conv.weight": (64, 32, 3, 3)}
    d = layer_densities(shapes, density, method)
    total = sum(math.prod(s) for s in shapes.values())
    assert _total_active(shapes, d) == pytest.approx(density * total, rel=1e-9)
    assert all(0 < v <= 1 for v in d.values())


def test_er_ignores_kernel_dimensions_and_erk_does_not():
    shapes = {"a": (64, 32, 3, 3), "b": (64, 32, 5, 5)}
    er = layer_densities(shapes, 0.1, "er")
    assert er["a"] == pytest.approx(er["b"])
    erk = layer_densities(shapes, 0.1, "erk")
    assert erk["a"] > erk["b"]


def test_erk_power_scale_flattens_towards_uniform():
    d0 = layer_densities(MLP, 0.05, "erk", power=0.0)
    assert d0["fc1.weight"] == pytest.approx(0.05) and d0["fc3.weight"] == pytest.approx(0.05)


def test_user_dense_layer_is_honoured_and_total_still_equals_target():
    d = layer_densities(MLP, 0.2, "erk", dense=["fc2.weight"])
    assert d["fc2.weight"] == 1.0
    total = sum(math.prod(s) for s in MLP.values())
    assert _total_active(MLP, d) == pytest.approx(0.2 * total, rel=1e-9)


@pytest.mark.parametrize("density", [0.0, -0.1, 1.5, float("nan")])
def test_density_outside_unit_interval_is_one_sentence(density):
    with pytest.raises(ConfigError, match=r"density must be a number in \(0, 1\], got"):
        layer_densities(MLP, density)


def test_unknown_distribution_lists_the_known_ones():
    with pytest.raises(ConfigError, match="known: er, erk, uniform"):
        layer_densities(MLP, 0.1, "erdos")


def test_dense_layers_larger_than_the_budget_are_rejected():
    with pytest.raises(ConfigError, match="kept dense"):
        layer_densities(MLP, 0.05, "erk", dense=["fc1.weight"])


def test_a_negative_erk_power_is_one_sentence():
    with pytest.raises(ConfigError, match=r"^erk_power must be a number in \[0, inf\), got -1\.$"):
        layer_densities(MLP, 0.1, "erk", power=-1)
