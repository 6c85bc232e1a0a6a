"""DST.state_dict: what resume needs, exactly, and nothing that grows with training."""

import io

import pytest
import torch

from .conftest import make_model, make_optimizer, train_steps

OPTIONS = {
    "prune": "snip",
    "grow": "momentum",
    "update_every": 1,
    "total_steps": 40,
    "score_smoothing": 0.5,
    "shadow_criteria": ["magnitude", "snip", "random", "mest"],
}


def _equal(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if torch.is_tensor(a):
        return torch.equal(a, b)
    return a == b


def test_state_dict_round_trip(make_dst):
    model, opt, dst = make_dst(**OPTIONS, update_position="after")
    train_steps(model, opt, dst, 5)
    state = dst.state_dict()
    assert {"grad_momentum", "tracker", "generator", "shadow_generator"} <= state.keys()
    _, _, other = make_dst(**OPTIONS, update_position="after", seed=3)
    other.load_state_dict(state)
    assert _equal(other.state_dict(), state)


def _saved_size(make_dst, steps: int) -> int:
    model, opt, dst = make_dst(**OPTIONS)
    train_steps(model, opt, dst, steps + 1)  # updates at steps 1..steps
    assert len(dst.records) == steps and "similarity" in dst.records[-1]
    state = dst.state_dict()
    # the ever-active positions (ITOP) grow with exploration, up to the layer: real state
    ever = state["tracker"].pop("ever_active")
    assert all(e.numel() <= dst.tracker.sizes[n] for n, e in ever.items())
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getbuffer().nbytes


def test_state_dict_does_not_grow_with_the_number_of_updates(make_dst):
    # update records (with their similarity matrices) went to the caller as they were made
    assert abs(_saved_size(make_dst, 20) - _saved_size(make_dst, 2)) <= 8


def test_records_stay_in_memory_for_the_session_but_not_in_the_state(make_dst):
    model, opt, dst = make_dst(**OPTIONS)
    train_steps(model, opt, dst, 4)
    assert len(dst.records) == 3 and "records" not in dst.state_dict()
    dst.load_state_dict(dst.state_dict())
    assert dst.records == []  # this session records from the resume point on
    train_steps(model, opt, dst, 2, start=4)
    assert [r["step"] for r in dst.records] == [4, 5]


@pytest.mark.parametrize("optim", ["sgd", "adam"])
def test_resume_continues_itop_and_churn(make_dst, optim):
    model, opt, dst = make_dst(optim=optim, update_every=2, total_steps=20)
    train_steps(model, opt, dst, 11)
    straight = train_steps(model, opt, dst, 4, start=11)
    model2, opt2, again = make_dst(optim=optim, update_every=2, total_steps=20)
    train_steps(model2, opt2, again, 11)
    state, opt_state = again.state_dict(), opt2.state_dict()
    model3, opt3, resumed = make_dst(optim=optim, update_every=2, total_steps=20)
    model3.load_state_dict(model2.state_dict())
    opt3.load_state_dict(opt_state)
    resumed.load_state_dict(state)
    after = train_steps(model3, opt3, resumed, 4, start=11)
    assert [(r["itop"], r["churn"]) for r in after] == [(r["itop"], r["churn"]) for r in straight]


def _model_and_optimizer():
    """The model and optimizer `make_dst` builds, at the same initial weights, without DST."""
    model = make_model((20, 30, 5))
    return model, make_optimizer(model)


def _dense_weights(dst) -> dict[str, torch.Tensor]:
    """Every sparse layer's weight as a dense tensor, whichever backend holds it."""
    out = {}
    for name in dst.masks:
        module = dst.model.get_submodule(name.rpartition(".")[0])
        out[name] = module.to_dense() if hasattr(module, "to_dense") else module.weight.detach()
    return out


@pytest.mark.parametrize("backend", ["masked", "sparse"])
def test_from_state_keeps_the_weights_under_the_saved_masks(make_dst, backend):
    from dstlab import DST
    from dstlab.sparse import SparseRule

    options = {"grow": "gradient", "backend": backend}
    if backend == "sparse":
        options["backend_options"] = {"rule": SparseRule(force=True)}
    model, opt, trained = make_dst(**options)
    train_steps(model, opt, trained, 5)  # updates at steps 2 and 4 moved the masks
    state = trained.state_dict()

    fresh_model, fresh_opt = _model_and_optimizer()
    weights = {n: p.detach().clone() for n, p in fresh_model.named_parameters()}
    dst = DST.from_state(fresh_model, fresh_opt, state, density=0.3, update_every=2,
                         total_steps=20, **options)  # fmt: skip

    assert _equal(dst.state_dict(), state)
    masks = dst.masks
    assert masks.keys() == trained.masks.keys()
    for name, weight in _dense_weights(dst).items():
        assert torch.equal(masks[name], trained.masks[name]), name
        assert torch.equal(weight, weights[name] * masks[name]), name  # only masked
    for name, param in fresh_model.named_parameters():
        if name not in masks and name in weights:
            assert torch.equal(param, weights[name]), name  # biases untouched

    # building, then loading, ends in the same state but zeroed the weights a fresh draw left out
    built_model, built_opt = _model_and_optimizer()
    built = DST(built_model, built_opt, density=0.3, update_every=2, total_steps=20, **options)
    built.load_state_dict(state)
    assert _equal(built.state_dict(), dst.state_dict())
    lost = [
        name
        for name, weight in _dense_weights(built).items()
        if not torch.equal(weight, weights[name] * masks[name])
    ]
    assert lost == list(masks)
