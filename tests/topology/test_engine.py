import io

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import dstlab
from dstlab import DST
from dstlab.errors import ConfigError
from dstlab.topology.criteria import NonFiniteScoreError

from .conftest import batch, make_model, train_steps

PRUNERS = [
    "random",
    "magnitude",
    "set",
    "mest",
    "snip",
    "sensitivity",
    "reciprocal_sensitivity",
    "taylor_fo",
]
GROWERS = ["random", "gradient", "momentum"]


def _inactive_is_zero(model, optimizer, dst):
    params = dict(model.named_parameters())
    for name, mask in dst.masks.items():
        p = params[name]
        assert torch.all(p.detach()[~mask] == 0), name
        if p.grad is not None:
            assert torch.all(p.grad[~mask] == 0), name
        for value in optimizer.state[p].values():
            if torch.is_tensor(value) and value.shape == p.shape:
                assert torch.all(value[~mask] == 0), name


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    widths=st.lists(st.integers(2, 24), min_size=2, max_size=4),
    density=st.floats(0.05, 1.0),
    prune=st.sampled_from(PRUNERS),
    grow=st.sampled_from(GROWERS),
    optim=st.sampled_from(["sgd", "adam", "adamw"]),
    distribution=st.sampled_from(["uniform", "er", "erk"]),
    selection=st.sampled_from(["local", "global"]),
    position=st.sampled_from(["before", "after"]),
    seed=st.integers(0, 1000),
)
def test_invariants_hold_after_every_step(
    make_dst, widths, density, prune, grow, optim, distribution, selection, position, seed
):
    if selection == "global" and prune == "set":
        selection = "local"
    model, opt, dst = make_dst(
        (20, *widths, 5),
        optim,
        model_seed=seed,
        density=density,
        prune=prune,
        grow=grow,
        distribution=distribution,
        update_every=2,
        total_steps=12,
        seed=seed,
        selection=selection,
        update_position=position,
    )
    counts = {n: int(m.sum()) for n, m in dst.masks.items()}
    for step in range(12):
        before = {n: m.clone() for n, m in dst.masks.items()}
        records = train_steps(model, opt, dst, 1, start=step)
        _inactive_is_zero(model, opt, dst)
        assert {n: int(m.sum()) for n, m in dst.masks.items()} == counts
        if records:
            for name, layer in records[0]["layers"].items():
                assert layer["active"] == counts[name]
                assert layer["removed"] == layer["grown"]
                assert layer["removed"] <= counts[name]
                # what changed is only what was removed or grown
                assert int((before[name] ^ dst.masks[name]).sum()) <= 2 * layer["removed"]
    assert len(dst.records) == 5


def test_removed_are_active_and_grown_are_inactive_after_pruning(make_dst):
    model, opt, dst = make_dst(prune="magnitude", grow="gradient", update_every=3, total_steps=30)
    train_steps(model, opt, dst, 3)
    before = {n: m.clone() for n, m in dst.masks.items()}
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    record = train_steps(model, opt, dst, 1, start=3)[0]
    for name, mask in dst.masks.items():
        removed = before[name] & ~mask
        grown = mask & ~before[name]
        n = record["layers"][name]["removed"]
        assert int(removed.sum()) <= n
        # what left the mask is among the n smallest active weights (the rest were regrown)
        active = before[name].reshape(-1).nonzero().squeeze(1)
        smallest = active[weights[name].reshape(-1)[active].abs().argsort()[:n]]
        assert set(removed.reshape(-1).nonzero().squeeze(1).tolist()) <= set(smallest.tolist())
        assert int(grown.sum()) == int(removed.sum())


def test_new_weights_start_at_zero_and_optimizer_state_is_reset(make_dst):
    model, opt, dst = make_dst(
        optim="adam",
        prune="magnitude",
        grow="random",
        update_every=4,
        total_steps=40,
        update_position="after",
    )
    train_steps(model, opt, dst, 4)
    before = {n: m.clone() for n, m in dst.masks.items()}
    train_steps(model, opt, dst, 1, start=4)  # update after the optimizer step
    params = dict(model.named_parameters())
    for name, mask in dst.masks.items():
        grown = mask & ~before[name]
        assert grown.any()
        assert torch.all(params[name].detach()[grown] == 0)
        assert torch.all(opt.state[params[name]]["exp_avg"][grown] == 0)
        assert torch.all(opt.state[params[name]]["exp_avg_sq"][grown] == 0)


def test_a_regrown_just_pruned_weight_restarts_from_zero(make_dst):
    # density 1.0: every pruned weight is the only place to regrow (the study's regulariser)
    model, opt, dst = make_dst(
        density=1.0,
        prune="magnitude",
        grow="random",
        update_every=2,
        total_steps=10,
        update_position="after",
        drop_fraction=0.5,
        decay="constant",
    )
    train_steps(model, opt, dst, 2)
    w_before = model[0].weight.detach().clone()
    train_steps(model, opt, dst, 1, start=2)
    assert all(bool(m.all()) for m in dst.masks.values())
    zeros = model[0].weight.detach() == 0
    assert int(zeros.sum()) == pytest.approx(0.5 * w_before.numel(), abs=1)


def test_update_order_is_the_same_for_every_criterion(make_dst):
    # "before": scores use the state the current gradient belongs to; the optimizer step follows
    for prune in ("magnitude", "snip"):
        model, opt, dst = make_dst(prune=prune, grow="gradient", total_steps=10)
        train_steps(model, opt, dst, 2)
        seen = {}
        original = dst._prune_sets

        def spy(*args, seen=seen, orig=original, model=model):
            seen["w"] = model[0].weight.detach().clone()
            return orig(*args)

        dst._prune_sets = spy
        w_before_step = model[0].weight.detach().clone()
        train_steps(model, opt, dst, 1, start=2)
        assert torch.equal(seen["w"], w_before_step)


def test_same_seed_gives_same_masks_and_other_seed_differs(make_dst):
    def run(seed):
        model, opt, dst = make_dst(
            density=0.2, prune="random", grow="random", total_steps=10, seed=seed
        )
        train_steps(model, opt, dst, 10)
        return dst.masks

    a, b, c = run(1), run(1), run(2)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert any(not torch.equal(a[n], c[n]) for n in a)


def test_initial_topology_has_exact_counts_and_zero_inactive_weights(make_dst):
    model, opt, dst = make_dst((64, 128, 10), density=0.1, distribution="erk", total_steps=100)
    for name, mask in dst.masks.items():
        numel = mask.numel()
        assert int(mask.sum()) == round(dst.layer_density[name] * numel)
    _inactive_is_zero(model, opt, dst)


def test_exact_resume_through_a_file(tmp_path, make_dst):
    def fresh():
        return make_dst(
            (20, 30, 16, 5),
            density=0.2,
            prune="set",
            grow="gradient",
            update_every=3,
            total_steps=40,
            seed=7,
            shadow_criteria=["magnitude", "random"],
        )

    model, opt, dst = fresh()
    train_steps(model, opt, dst, 20)
    straight = ({n: p.detach().clone() for n, p in model.named_parameters()}, dst.masks)

    model, opt, dst = fresh()
    train_steps(model, opt, dst, 10)
    path = tmp_path / "ckpt.pt"
    torch.save(
        {"model": model.state_dict(), "opt": opt.state_dict(), "dst": dst.state_dict()}, path
    )
    model, opt, dst = fresh()
    state = torch.load(path, weights_only=False)
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["opt"])
    dst.load_state_dict(state["dst"])
    train_steps(model, opt, dst, 10, start=10)
    for name, p in model.named_parameters():
        assert torch.equal(p.detach(), straight[0][name]), name
    for name, m in dst.masks.items():
        assert torch.equal(m, straight[1][name])


def test_records_report_itop_churn_and_symmetric_similarity(make_dst):
    model, opt, dst = make_dst(
        prune="magnitude", grow="gradient", shadow_criteria=["magnitude", "snip", "set", "random"]
    )
    records = train_steps(model, opt, dst, 9)
    assert [r["step"] for r in records] == [2, 4, 6, 8]
    itops = [r["itop"] for r in records]
    assert itops == sorted(itops) and 0.3 <= itops[0] <= 1
    assert all(0 <= r["churn"] <= 1 for r in records)
    sim = records[-1]["similarity"]
    assert sim["criteria"] == ["magnitude", "snip", "set", "random"]
    m = torch.tensor(sim["pooled"])
    assert torch.allclose(m, m.T) and torch.all(m.diagonal() == 1)
    assert all(
        torch.allclose(torch.tensor(v), torch.tensor(v).T) for v in sim["per_layer"].values()
    )


def test_shadow_criteria_do_not_change_training(make_dst):
    def run(shadows):
        model, opt, dst = make_dst(prune="random", grow="random", shadow_criteria=shadows)
        train_steps(model, opt, dst, 9)
        return dst.masks

    a, b = run(()), run(("random", "snip"))
    assert all(torch.equal(a[n], b[n]) for n in a)


def test_compare_criteria_at_the_start_matches_itself_on_the_diagonal(make_dst):
    model, opt, dst = make_dst(density=0.2, total_steps=10)
    x = torch.randn(8, 20)
    nn.functional.cross_entropy(model(x), torch.zeros(8, dtype=torch.long)).backward()
    sim = dst.compare_criteria(["magnitude", "snip", "mest"], fraction=0.25)
    assert sim["pooled"][0][0] == 1.0 and 0 < sim["pooled"][0][1] <= 1
    assert dst.step_count == 0


def test_global_selection_removes_an_exact_total_and_keeps_layer_densities(make_dst):
    for norm in (None, "layer_sum", "layer_max", "row_sum", "column_max"):
        model, opt, dst = make_dst(
            (20, 40, 30, 5),
            density=0.2,
            distribution="uniform",
            prune="magnitude",
            grow="gradient",
            update_every=2,
            total_steps=10,
            selection="global",
            global_normalize=norm,
            drop_fraction=0.3,
            decay="constant",
        )
        counts = {n: int(m.sum()) for n, m in dst.masks.items()}
        record = train_steps(model, opt, dst, 3)[0]
        removed = sum(layer["removed"] for layer in record["layers"].values())
        assert removed == sum(-(-3 * c // 10) for c in counts.values())
        assert {n: int(m.sum()) for n, m in dst.masks.items()} == counts


def test_score_smoothing_prunes_by_the_ema_of_the_score(make_dst):
    beta = 0.9
    model, opt, dst = make_dst(
        prune="snip", grow="random", update_every=3, total_steps=12, score_smoothing=beta
    )
    counts = {n: int(m.sum()) for n, m in dst.masks.items()}
    params = dict(model.named_parameters())
    ema: dict[str, torch.Tensor] = {}
    for step in range(4):
        x, y = batch(model, step)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        for name in dst.masks:  # snip's score |w·g| of this step, smoothed by hand
            score = (params[name].detach() * params[name].grad).abs()
            ema[name] = score if name not in ema else beta * ema[name] + (1 - beta) * score
        before = {n: m.clone() for n, m in dst.masks.items()}
        record = dst.step()
        if step in (1, 2):  # between updates the engine holds this very EMA
            assert all(torch.allclose(dst._smoothed[n], ema[n], atol=1e-7) for n in ema)
    # at step 3 (an update) each layer removed the active weights of lowest EMA, not of lowest
    # current score
    for name, mask in before.items():
        n = record["layers"][name]["removed"]
        active = mask.reshape(-1).nonzero().squeeze(1)
        lowest = active[ema[name].reshape(-1)[active].argsort()[:n]]
        gone = (mask & ~dst.masks[name]).reshape(-1).nonzero().squeeze(1)
        assert set(gone.tolist()) <= set(lowest.tolist()) and n > 0
    assert dst._smoothed == {}  # restarted after the update
    train_steps(model, opt, dst, 6, start=4)
    assert len(dst.records) == 3
    assert {n: int(m.sum()) for n, m in dst.masks.items()} == counts


def test_static_mode_never_changes_the_topology(make_dst):
    model, opt, dst = make_dst(update_every=1, total_steps=10, static=True)
    before = {n: m.clone() for n, m in dst.masks.items()}
    assert train_steps(model, opt, dst, 5) == []
    assert all(torch.equal(before[n], m) for n, m in dst.masks.items())
    _inactive_is_zero(model, opt, dst)


def test_dense_layers_by_pattern_stay_dense_and_unmasked(make_dst):
    model, opt, dst = make_dst(total_steps=10, dense_layers=["2.*"])
    assert list(dst.masks) == ["0.weight"]
    assert dst.current_density() == pytest.approx(0.3, abs=1e-2)


def test_sparse_density_and_layer_counts_leave_the_dense_layers_out(make_dst):
    model, opt, dst = make_dst(total_steps=10, dense_layers=["2.*"])
    mask, dense = dst.masks["0.weight"], model[2].weight.numel()
    active = int(mask.sum())
    assert dst.layer_counts() == {"0.weight": active}
    assert dst.sparse_density() == active / mask.numel() != dst.current_density()
    assert dst.current_density() == (active + dense) / (mask.numel() + dense)


def test_conv_layers_are_sparse_too(make_dst):
    model, opt, dst = make_dst(conv=True, prune="snip", grow="gradient", total_steps=10)
    assert "0.weight" in dst.masks and dst.masks["0.weight"].dim() == 4
    train_steps(model, opt, dst, 5, conv=True)
    _inactive_is_zero(model, opt, dst)


def test_non_finite_scores_name_the_layer_and_leave_masks_untouched(make_dst):
    model, opt, dst = make_dst(prune="snip", grow="gradient", update_every=1, total_steps=10)
    before = {n: m.clone() for n, m in dst.masks.items()}
    x = torch.randn(4, 20)
    nn.functional.cross_entropy(model(x), torch.zeros(4, dtype=torch.long)).backward()
    dst.step_count = 1
    model[2].weight.grad[0, 0] = float("nan")
    with pytest.raises(NonFiniteScoreError, match="layer '2.weight' at step 1"):
        dst.step()
    assert all(torch.equal(before[n], m) for n, m in dst.masks.items())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"density": 0.0}, r"density must be a number in \(0, 1\], got 0.0\."),
        ({"density": 1.01}, r"density must be a number in \(0, 1\], got 1.01\."),
        (
            {"prune": "magnitud"},
            r"prune must be one of .*; got 'magnitud' \(did you mean 'magnitude'\?\)\.",
        ),
        (
            {"grow": "gradients"},
            r"grow must be one of .*; got 'gradients' \(did you mean 'gradient'\?\)\.",
        ),
        ({"distribution": "erdos"}, "distribution must be one of uniform, er, erk; got 'erdos'"),
        ({"update_every": 0}, r"update_every must be a whole number in \[1, inf\), got 0\."),
        ({"drop_fraction": 1.0}, r"drop_fraction must be a number in \(0, 1\), got 1.0\."),
        ({"drop_fraction": 0.0}, r"drop_fraction must be a number in \(0, 1\), got 0.0\."),
        ({"decay": "cosine", "total_steps": None}, "needs total_steps"),
        ({"selection": "global", "prune": "set"}, "cannot select globally"),
        ({"selection": "both"}, "selection must be one of"),
        ({"dense_layers": ["nope.*"]}, "match no sparsifiable parameter"),
    ],
)
def test_bad_input_is_one_clear_sentence(make_dst, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        make_dst(**{"total_steps": 100, **kwargs})


def test_a_model_with_nothing_to_sparsify():
    model = nn.Sequential(nn.BatchNorm1d(4))
    with pytest.raises(ConfigError, match="no parameter with 2 or more dimensions"):
        DST(model, torch.optim.SGD(model.parameters(), lr=0.1), total_steps=10)


def test_an_optimizer_that_does_not_hold_the_models_parameters():
    model = make_model((20, 30, 5))
    other = make_model((20, 30, 5))
    with pytest.raises(ConfigError, match="optimizer does not hold"):
        DST(model, torch.optim.SGD(other.parameters(), lr=0.1), total_steps=10)


def test_public_names_of_the_spec(make_dst):
    p = dstlab.get_pruner("mest", gamma=1.0)
    w, g = torch.randn(6, 5), torch.randn(6, 5)
    mask = torch.rand(6, 5) < 0.5
    gen = torch.Generator().manual_seed(0)
    removed = p.select(w, g, mask, 3, generator=gen)
    assert int(removed.sum()) == 3 and not (removed & ~mask).any()
    after = mask & ~removed
    added = dstlab.get_grower("gradient").select(w, g, after, 3, generator=gen, momentum=None)
    assert int(added.sum()) == 3 and not (added & after).any()
    buf = io.BytesIO()
    model, _, dst = make_dst(
        density=0.1,
        prune="magnitude",
        grow="random",
        distribution="erk",
        update_every=800,
        drop_fraction=0.5,
        decay="cosine",
        total_steps=1000,
        seed=0,
    )
    torch.save(dst.state_dict(), buf)
    assert set(dst.masks) == {"0.weight", "2.weight"}


@pytest.mark.parametrize(
    ("kwargs", "hint"),
    [
        ({"selection": "globl"}, "selection must be one of local, global; got 'globl'"),
        ({"update_position": "befor"}, "(did you mean 'before'?)"),
        ({"global_normalize": "layr_sum", "selection": "global"}, "(did you mean 'layer_sum'?)"),
        ({"decay": "cosin"}, "(did you mean 'cosine'?)"),
        ({"distribution": "erkk"}, "(did you mean 'erk'?)"),
        ({"prune": "snpi"}, "(did you mean 'snip'?)"),
        ({"shadow_criteria": ["magnitude", "sets"]}, "(did you mean 'set'?)"),
    ],
)
def test_a_misspelt_option_suggests_the_closest_value(make_dst, kwargs, hint):
    with pytest.raises(ConfigError) as caught:
        make_dst(**kwargs)
    assert hint in str(caught.value)
    assert "did you mean" in str(caught.value)


def test_a_meta_model_builds_without_drawing_or_writing_any_value():
    # a ResNet-50-sized layer: drawing its mask would cost a real randperm, the meta one nothing
    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(2048, 12_000), nn.ReLU(), nn.Linear(12_000, 1000))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    dst = DST(model, opt, density=0.1, total_steps=100)
    mask = dst.masks["0.weight"]
    assert mask.is_meta and mask.shape == model[0].weight.shape
    untouched = torch.Generator().manual_seed(0).get_state()
    assert torch.equal(dst.generator.get_state(), untouched)  # no mask was drawn
    assert set(dst.layer_density) == {"0.weight", "2.weight"}
    with pytest.raises(ConfigError, match="cannot select globally"):
        DST(model, opt, prune="set", selection="global", total_steps=100)


def _removed_sets(dst, model, names):
    x = torch.randn(8, 20, generator=torch.Generator().manual_seed(0))
    nn.functional.cross_entropy(model(x), torch.zeros(8, dtype=torch.long)).backward()
    return dst.compare_criteria(names, fraction=0.5)


def test_prune_options_reach_the_criterion_and_gamma_still_works(make_dst):
    _, _, by_options = make_dst(prune="mest", prune_options={"gamma": 3.0})
    _, _, by_gamma = make_dst(prune="mest", gamma=3.0)
    _, _, default = make_dst(prune="mest")
    assert by_options.pruner.gamma == by_gamma.pruner.gamma == 3.0
    assert default.pruner.gamma == 1.0
    # shadow and compared criteria get the options they take: mest its gamma, snip none
    model, _, shadows = make_dst(prune="magnitude", gamma=0.0, shadow_criteria=["mest", "snip"])
    assert shadows.shadow_pruners["mest"].gamma == 0.0
    sim = _removed_sets(shadows, model, ["magnitude", "mest"])
    assert sim["pooled"][0][1] == 1.0  # mest with γ = 0 is magnitude


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"prune": "magnitude", "prune_options": {"gamma": 2.0}}, "does not take the option"),
        ({"prune": "mest", "gamma": 2.0, "prune_options": {"gamma": 2.0}}, "give gamma once"),
        ({"prune": "mest", "prune_options": {"gamma": -1.0}}, r"gamma must be a number in \[0,"),
        ({"backend": "sparce"}, r"backend must be one of masked, sparse; got 'sparce' \(did you"),
        ({"backend_options": {"force": True}}, "backend 'masked' does not take the option"),
        ({"backend": "sparse", "backend_options": {"forse": True}}, "not forse"),
    ],
)
def test_bad_options_are_one_clear_sentence(make_dst, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        make_dst(**kwargs)


def test_a_registered_backend_builds_the_targets(make_dst):
    from dstlab.topology import backends
    from dstlab.topology.masks import masked_targets

    built = []

    def counting(model, optimizer, params, masks, tag):
        built.append((tag, sorted(params)))
        return masked_targets(model, optimizer, params, masks)

    backends.register_backend("test_counting", counting)
    try:
        _, _, dst = make_dst(backend="test_counting", backend_options={"tag": "t"})
        assert built == [("t", ["0.weight", "2.weight"])] and len(dst.targets) == 2
        assert "test_counting" in backends.backend_names()
    finally:
        backends._FACTORIES.unregister("test_counting")
