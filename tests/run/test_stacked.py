"""Stacked runs (dstlab.run.stacked): each member ends as the run alone ends.

With linear layers the batched products compute each slice exactly as the plain ones, so a
member's masks, update records, weights, losses and accuracies are bit-for-bit those of the run
alone. Convolutions under vmap round differently (about 1e-6 relative per forward pass), so a
convolutional member is only checked to train."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from dstlab.errors import ConfigError
from dstlab.run import files
from dstlab.run.config import RunConfig
from dstlab.run.loop import train
from dstlab.run.stacked import _Member, stack_key, train_stack
from dstlab.topology.criteria import list_growers, list_pruners

BASE = {
    "data": "digits",
    "model": "mlp",
    "epochs": 2,
    "batch_size": 64,
    "update_every": 5,
    "threads": 1,
    "checkpoint_seconds": 1e9,
}


def _configs(combos: list[tuple[str, str]], **shared) -> list[RunConfig]:
    base = {**BASE, **shared}
    runs = [
        RunConfig(**base, prune=prune, grow=grow, seed=i % 3, density=(0.05, 0.1, 0.2)[i % 3])
        for i, (prune, grow) in enumerate(combos)
    ]
    runs.append(RunConfig(**base, mode="static", density=0.1, seed=4))
    runs.append(RunConfig(**base, mode="dense", seed=5))
    return runs


def _updates(run_dir: Path) -> list[dict]:
    return [r for r in files.read_metrics(run_dir / files.METRICS) if r["kind"] == "update"]


def _assert_same_run(alone: Path, stacked: Path, a: dict, b: dict) -> None:
    assert b["status"] == a["status"] == "done"
    for key in ("test_acc", "best_val_acc", "test_acc_best_val", "best_val_epoch", "steps"):
        assert b[key] == a[key], key
    assert b["final_train_loss"] == a["final_train_loss"]
    assert _updates(stacked) == _updates(alone)
    ca = files.load_checkpoint(alone / files.CHECKPOINT)
    cb = files.load_checkpoint(stacked / files.CHECKPOINT)
    for name, tensor in ca["model"].items():
        assert torch.equal(cb["model"][name], tensor), name
    if ca["dst"] is not None:
        for name, mask in ca["dst"]["masks"].items():
            assert torch.equal(cb["dst"]["masks"][name], mask), name
    for state_a, state_b in zip(
        ca["optimizer"]["state"].values(), cb["optimizer"]["state"].values(), strict=True
    ):
        assert state_a.keys() == state_b.keys()
        for key, value in state_a.items():
            assert torch.equal(state_b[key], value), key


def _compare(tmp_path: Path, configs: list[RunConfig]) -> None:
    alone = [train(c, tmp_path / f"alone{i}", progress=False) for i, c in enumerate(configs)]
    dirs = [tmp_path / f"stacked{i}" for i in range(len(configs))]
    stacked = train_stack(configs, dirs)
    for i, (a, b) in enumerate(zip(alone, stacked, strict=True)):
        _assert_same_run(tmp_path / f"alone{i}", dirs[i], a, b)


def test_a_stack_of_some_criteria_equals_its_runs_alone(tmp_path):
    _compare(tmp_path, _configs([("magnitude", "random"), ("snip", "gradient")]))


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_adam_stacked_equals_alone(tmp_path, optimizer):
    _compare(tmp_path, _configs([("magnitude", "gradient")], optimizer=optimizer, lr=0.01))


@pytest.mark.slow
def test_every_criterion_and_growth_stacked_equals_alone(tmp_path):
    combos = list(itertools.product(list_pruners(), list_growers()))
    _compare(tmp_path, _configs(combos))


def test_the_checkpoint_holds_only_the_members_slice(tmp_path):
    configs = _configs([("magnitude", "random")])
    train_stack(configs, [tmp_path / f"s{i}" for i in range(len(configs))])
    state = files.load_checkpoint(tmp_path / "s0" / files.CHECKPOINT)
    weight = state["model"]["fc1.weight"]
    assert weight.untyped_storage().nbytes() == weight.numel() * weight.element_size()


def _poison(monkeypatch, index: int) -> None:
    """Member `index` starts with a NaN weight (it diverges at its first step)."""
    init = _Member.__init__

    def poisoned(self, i, *args, **kwargs):
        init(self, i, *args, **kwargs)
        if i == index:
            with torch.no_grad():
                self.model.get_parameter("fc1.weight").fill_(float("nan"))

    monkeypatch.setattr(_Member, "__init__", poisoned)


def test_a_diverging_member_ends_alone(tmp_path, monkeypatch):
    configs = _configs([("magnitude", "random"), ("snip", "gradient")])
    alone = [train(c, tmp_path / f"alone{i}", progress=False) for i, c in enumerate(configs)]
    _poison(monkeypatch, 1)
    dirs = [tmp_path / f"stacked{i}" for i in range(len(configs))]
    stacked = train_stack(configs, dirs)
    assert stacked[1]["status"] == files.DIVERGED and stacked[1]["diverged_step"] == 1
    for i in (0, 2, 3):
        _assert_same_run(tmp_path / f"alone{i}", dirs[i], alone[i], stacked[i])


def test_a_failing_member_ends_alone_with_its_error(tmp_path, monkeypatch):
    configs = _configs([("magnitude", "random"), ("set", "random")])
    init = _Member.__init__

    def breaking(self, i, *args, **kwargs):
        init(self, i, *args, **kwargs)
        if i == 1:

            def broken(*a, **k):
                if self.step == 3:
                    raise RuntimeError("the engine broke")

            original = self.dst.before_optimizer_step
            self.dst.before_optimizer_step = lambda *a, **k: (broken(), original(*a, **k))

    monkeypatch.setattr(_Member, "__init__", breaking)
    results = train_stack(configs, [tmp_path / f"s{i}" for i in range(len(configs))])
    assert results[1]["status"] == files.FAILED
    assert results[1]["error"] == "RuntimeError: the engine broke" and results[1]["steps"] == 3
    assert files.read_json(tmp_path / "s1" / files.RESULT)["status"] == files.FAILED
    assert [results[i]["status"] for i in (0, 2, 3)] == [files.DONE] * 3


class _Killed(BaseException):
    pass


def test_a_killed_stack_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch):
    configs = [c.replace(checkpoint_seconds=0.0) for c in _configs([("magnitude", "gradient")])]
    whole = [tmp_path / f"whole{i}" for i in range(len(configs))]
    expected = train_stack(configs, whole)
    from dstlab.run import stacked as stacked_module

    step = stacked_module.Stack._step
    calls = {"n": 0}

    def dying(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 13:  # in the middle of the second epoch
            raise _Killed
        return step(self, *args, **kwargs)

    dirs = [tmp_path / f"cut{i}" for i in range(len(configs))]
    monkeypatch.setattr(stacked_module.Stack, "_step", dying)
    with pytest.raises(_Killed):
        train_stack(configs, dirs)
    monkeypatch.setattr(stacked_module.Stack, "_step", step)
    # one member lost its checkpoint: it resumes alone, from the start, after the stack
    (dirs[0] / files.CHECKPOINT).unlink()
    resumed = train_stack(configs, dirs, resume=True)
    for i, (a, b) in enumerate(zip(expected, resumed, strict=True)):
        _assert_same_run(whole[i], dirs[i], a, b)
    assert train_stack(configs, dirs, resume=True) == resumed  # finished: the stored results


def test_what_stacks_and_what_trains_alone():
    a = RunConfig(**BASE, seed=0)
    assert stack_key(a) == stack_key(a.replace(seed=1, prune="snip", density=0.2, mode="static"))
    assert stack_key(a) != stack_key(a.replace(lr=0.1))
    for change in ({"dropout": 0.1}, {"nproc": 2}, {"accumulate": 2}, {"backend": "sparse"}):
        assert stack_key(a.replace(**change)) is None, change
    with pytest.raises(ConfigError, match="share everything but the seed"):
        train_stack([a, a.replace(lr=0.1)], ["x", "y"])


@pytest.mark.slow
def test_a_batch_norm_model_trains_stacked_with_its_own_statistics(tmp_path):
    base = {**BASE, "model": "resnet56", "epochs": 1, "update_every": 3}
    configs = [RunConfig(**base, seed=0), RunConfig(**base, seed=1, density=0.2)]
    dirs = [tmp_path / "a", tmp_path / "b"]
    results = train_stack(configs, dirs)
    assert [r["status"] for r in results] == [files.DONE] * 2
    states = [files.load_checkpoint(d / files.CHECKPOINT)["model"] for d in dirs]
    assert not torch.equal(states[0]["bn.running_mean"], states[1]["bn.running_mean"])
    assert int(states[0]["bn.num_batches_tracked"]) == results[0]["steps"]
