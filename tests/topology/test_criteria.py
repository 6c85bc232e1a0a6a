import pytest
import torch

import dstlab
from dstlab.errors import ConfigError
from dstlab.topology.criteria import NonFiniteScoreError

W = torch.tensor([[0.5, -0.1, 0.3], [-0.8, 0.05, 0.0]])
G = torch.tensor([[0.1, 2.0, -0.1], [0.01, 1.0, 5.0]])
ALL = torch.ones_like(W, dtype=torch.bool)


def _removed(name, n, mask=ALL, weight=W, grad=G, seed=0, **kw):
    gen = torch.Generator().manual_seed(seed)
    out = dstlab.get_pruner(name, **kw).select(weight, grad, mask, n, generator=gen)
    assert out.dtype == torch.bool and out.shape == weight.shape
    assert int(out.sum()) == n and not (out & ~mask).any()
    return {tuple(i) for i in out.nonzero().tolist()}


def test_magnitude_removes_smallest_absolute_weights():
    assert _removed("magnitude", 2) == {(1, 2), (1, 1)}  # |0.0|, |0.05|


def test_mest_adds_gamma_times_gradient_magnitude():
    # |w| + |g| = .6 2.1 .4 / .81 1.05 5.0
    assert _removed("mest", 2) == {(0, 2), (0, 0)}
    # gamma=0 is magnitude
    assert _removed("mest", 2, gamma=0.0) == {(1, 2), (1, 1)}


def test_snip_removes_smallest_weight_times_gradient():
    # |w g| = .05 .2 .03 / .008 .05 0
    assert _removed("snip", 3) == {(1, 2), (1, 0), (0, 2)}


def test_taylor_fo_uses_the_square_of_weight_times_gradient():
    assert _removed("taylor_fo", 3) == _removed("snip", 3)


def test_sensitivity_removes_smallest_gradient_over_weight():
    # |g|/|w| = .2 20 .33 / .0125 20 5e8
    assert _removed("sensitivity", 2) == {(1, 0), (0, 0)}


def test_reciprocal_sensitivity_removes_smallest_weight_over_gradient():
    # |w|/|g| = 5 .05 3 / 80 .05 0
    assert _removed("reciprocal_sensitivity", 1) == {(1, 2)}
    assert len(_removed("reciprocal_sensitivity", 3)) == 3


def test_only_active_weights_compete():
    mask = ALL.clone()
    mask[1, 2] = mask[1, 1] = False
    assert _removed("magnitude", 1, mask=mask) == {(0, 1)}


def test_set_splits_by_sign_with_odd_n():
    w = torch.tensor([0.9, 0.2, 0.4, -0.3, -0.05, -0.7, 0.1])
    mask = torch.ones(7, dtype=torch.bool)
    # n = 3: ceil(3/2)=2 smallest non-negative (0.1, 0.2), floor(3/2)=1 negative closest to 0 (-0.05)
    assert _removed("set", 3, mask=mask, weight=w, grad=None) == {(6,), (1,), (4,)}


def test_set_takes_the_rest_from_the_other_sign_when_one_has_too_few():
    w = torch.tensor([0.9, 0.2, 0.4, -0.3, 0.05])
    mask = torch.ones(5, dtype=torch.bool)
    # n = 4 wants 2 negative, only 1 exists: 3 positives (0.05, 0.2, 0.4) and -0.3
    assert _removed("set", 4, mask=mask, weight=w, grad=None) == {(4,), (1,), (2,), (3,)}
    inactive_negative = mask.clone()
    inactive_negative[3] = False
    assert _removed("set", 2, mask=inactive_negative, weight=w, grad=None) == {(4,), (1,)}


def test_set_reference_defect_is_not_copied_it_removes_exactly_n():
    w = torch.randn(50, 40, generator=torch.Generator().manual_seed(1))
    mask = torch.rand(50, 40, generator=torch.Generator().manual_seed(2)) < 0.3
    assert len(_removed("set", 5, mask=mask, weight=w, grad=None)) == 5


@pytest.mark.parametrize(
    "name",
    [
        "random",
        "magnitude",
        "set",
        "mest",
        "snip",
        "sensitivity",
        "reciprocal_sensitivity",
        "taylor_fo",
    ],
)
def test_all_zero_inputs_are_ties_broken_by_the_generator(name):
    zeros = torch.zeros(20, 30)
    grad = torch.zeros(20, 30)
    a = _removed(
        name, 77, mask=torch.ones(20, 30, dtype=torch.bool), weight=zeros, grad=grad, seed=3
    )
    b = _removed(
        name, 77, mask=torch.ones(20, 30, dtype=torch.bool), weight=zeros, grad=grad, seed=3
    )
    c = _removed(
        name, 77, mask=torch.ones(20, 30, dtype=torch.bool), weight=zeros, grad=grad, seed=4
    )
    assert a == b and a != c


def _grown(name, n, mask, grad=G, momentum=None, seed=0):
    gen = torch.Generator().manual_seed(seed)
    out = dstlab.get_grower(name).select(W, grad, mask, n, generator=gen, momentum=momentum)
    assert int(out.sum()) == n and not (out & mask).any()
    return {tuple(i) for i in out.nonzero().tolist()}


def test_gradient_growth_takes_largest_gradient_among_inactive():
    mask = torch.tensor([[True, False, False], [False, False, True]])
    # inactive |g|: (0,1)=2.0 (0,2)=.1 (1,0)=.01 (1,1)=1.0 ; (1,2)=5.0 is active
    assert _grown("gradient", 2, mask) == {(0, 1), (1, 1)}


def test_momentum_growth_uses_the_momentum_magnitude():
    mask = torch.zeros_like(ALL)
    momentum = torch.tensor([[0.0, -3.0, 0.1], [0.2, 0.0, 1.0]])
    assert _grown("momentum", 2, mask, momentum=momentum) == {(0, 1), (1, 2)}


def test_momentum_growth_without_momentum_is_one_sentence():
    with pytest.raises(ConfigError, match="needs the momentum of the dense gradient"):
        _grown("momentum", 1, torch.zeros_like(ALL))


def test_random_growth_grows_exactly_n_and_is_reproducible():
    mask = torch.rand(300, 200, generator=torch.Generator().manual_seed(0)) < 0.1
    gen = lambda s: torch.Generator().manual_seed(s)  # noqa: E731
    grower = dstlab.get_grower("random")
    for n in (1, 100, 5000, int((~mask).sum())):
        a = grower.select(torch.zeros(300, 200), None, mask, n, generator=gen(1))
        b = grower.select(torch.zeros(300, 200), None, mask, n, generator=gen(1))
        assert int(a.sum()) == n and not (a & mask).any() and torch.equal(a, b)


def test_random_growth_is_uniform_over_inactive_positions():
    mask = torch.zeros(1000, dtype=torch.bool)
    mask[:500] = True
    hits = torch.zeros(1000)
    gen = torch.Generator().manual_seed(0)
    for _ in range(400):
        hits += dstlab.get_grower("random").select(torch.zeros(1000), None, mask, 50, gen).float()
    assert hits[:500].sum() == 0 and hits.sum() == 400 * 50
    # each inactive position is chosen with probability 0.1: 40 expected. Pearson's χ² over the
    # 500 positions (499 degrees of freedom) is below 602.3, its 0.1 % upper quantile, unless
    # the draws favour some positions
    chi2 = float(((hits[500:] - 40) ** 2 / 40).sum())
    assert chi2 < 602.3


def test_non_finite_scores_raise():
    grad = G.clone()
    grad[0, 0] = float("nan")
    with pytest.raises(NonFiniteScoreError):
        dstlab.get_pruner("snip").select(W, grad, ALL, 2)


def test_unknown_criterion_lists_the_known_ones():
    with pytest.raises(ConfigError, match="known: magnitude, mest, random"):
        dstlab.get_pruner("magnitud")
    with pytest.raises(ConfigError, match="known: gradient, momentum, random"):
        dstlab.get_grower("grad")


def test_register_a_pruner_with_one_decorated_function(restore_criteria):
    @dstlab.register_pruner("test_abs_grad")
    def abs_grad(weight, grad, scale=1.0):
        return scale * grad.abs()

    assert "test_abs_grad" in dstlab.list_pruners()
    # |g| smallest: (1,0)=.01 then (0,0)/(0,2)=.1
    p = dstlab.get_pruner("test_abs_grad", scale=2.0)
    assert int(p.select(W, G, ALL, 1)[1, 0]) == 1


def test_register_a_grower_with_one_small_class(restore_criteria):
    @dstlab.register_grower("test_smallest_grad")
    class SmallestGradient(dstlab.Grower):
        def score(self, weight, grad, momentum):
            return -grad.abs()

    mask = torch.zeros_like(ALL)
    assert {
        tuple(i)
        for i in dstlab.get_grower("test_smallest_grad").select(W, G, mask, 1).nonzero().tolist()
    } == {(1, 0)}


def test_a_test_that_registers_cleans_up(restore_criteria):
    # the two tests above registered names; the fixture removed them again
    assert "test_abs_grad" not in dstlab.list_pruners()
    assert "test_smallest_grad" not in dstlab.list_growers()


def test_options_reach_a_criterion_through_its_signature():
    from dstlab.topology.criteria import pruner_options

    assert pruner_options("mest", {"gamma": 2.0, "other": 1}) == {"gamma": 2.0}
    assert pruner_options("magnitude", {"gamma": 2.0}) == {}
    with pytest.raises(ConfigError, match="'magnitude' does not take the option.s. gamma"):
        dstlab.get_pruner("magnitude", gamma=2.0)


def test_a_registered_function_takes_its_own_options(restore_criteria):
    from dstlab.topology.criteria import pruner_options

    @dstlab.register_pruner("test_scaled")
    def scaled(weight, grad, scale=1.0, generator=None):
        return scale * weight.abs()

    assert pruner_options("test_scaled", {"scale": 3.0, "gamma": 1.0}) == {"scale": 3.0}
    with pytest.raises(ConfigError, match="does not take the option.s. gamma; it takes: scale"):
        dstlab.get_pruner("test_scaled", gamma=1.0)
