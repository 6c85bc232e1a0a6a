"""One run end to end: modes, optimizers, files, divergence and failure."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

import dstlab.data
import dstlab.models
from dstlab.errors import ConfigError
from dstlab.run import RunConfig, train
from dstlab.run.files import load_checkpoint, read_metrics

from .conftest import assert_same_state, final_state, small

pytestmark = pytest.mark.usefixtures("quiet_threads")

RESULT_FIELDS = {
    "status", "test_acc", "best_val_acc", "test_acc_best_val", "final_density", "epochs",
    "steps", "seconds", "final_train_loss", "diverged_step", "error",
}  # fmt: skip


@pytest.mark.parametrize("mode", ["dense", "static", "dst"])
def test_each_mode_leaves_a_complete_run_directory(tmp_path, mode):
    result = train(small(mode=mode), tmp_path, progress=False)

    assert result.keys() >= RESULT_FIELDS
    assert result["status"] == "done"
    assert result["epochs"] == 2 and result["steps"] == 42
    assert 0.5 < result["test_acc"] <= 1.0  # learned something in 2 epochs
    assert json.loads((tmp_path / "result.json").read_text()) == result
    stored = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert RunConfig.from_dict(stored) == small(mode=mode)

    records = read_metrics(tmp_path / "metrics.jsonl")
    epochs = [r for r in records if r["kind"] == "epoch"]
    updates = [r for r in records if r["kind"] == "update"]
    assert [r["epoch"] for r in epochs] == [1, 2]
    assert all(0 <= r["val_acc"] <= 1 and r["train_loss"] > 0 for r in epochs)
    if mode == "dense":
        assert result["final_density"] == 1.0 and not updates
    else:
        assert result["final_density"] == pytest.approx(0.3, abs=0.002)
    if mode == "static":
        assert not updates
    if mode == "dst":
        assert [r["step"] for r in updates] == [10, 20, 30, 40]
        assert all(r["layers"] for r in updates)


def test_best_validation_model_is_tested_separately(tmp_path):
    result = train(small(epochs=3), tmp_path, progress=False)
    epochs = [r for r in read_metrics(tmp_path / "metrics.jsonl") if r["kind"] == "epoch"]
    best = max(epochs, key=lambda r: r["val_acc"])
    assert result["best_val_acc"] == best["val_acc"]
    assert result["best_val_epoch"] == best["epoch"]
    assert load_checkpoint(tmp_path / "checkpoint.pt")["best"]["epoch"] == best["epoch"]
    assert 0.5 < result["test_acc_best_val"] <= 1.0


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_every_optimizer_keeps_inactive_weights_zero(tmp_path, optimizer):
    lr = 0.05 if optimizer == "sgd" else 0.003
    config = small(epochs=1, optimizer=optimizer, lr=lr, weight_decay=1e-2, update_every=5)
    result = train(config, tmp_path, progress=False)
    assert result["status"] == "done" and result["test_acc"] > 0.3
    ckpt = load_checkpoint(tmp_path / "checkpoint.pt")
    # the optimizer numbers parameters in model.parameters() order
    names = [k for k in ckpt["model"] if k.endswith(("weight", "bias"))]
    state = {names[i]: s for i, s in ckpt["optimizer"]["state"].items()}
    for name, mask in ckpt["dst"]["masks"].items():
        weight = ckpt["model"][name]
        assert not weight[~mask].any(), name
        assert weight[mask].count_nonzero() > 0.9 * mask.sum()  # grown weights are trained
        buffers = [v for v in state[name].values() if v.shape == mask.shape]
        assert buffers and all(not b[~mask].any() for b in buffers), name


def test_equal_seeds_give_equal_runs_and_other_seeds_differ(tmp_path):
    a = train(small(epochs=1), tmp_path / "a", progress=False)
    b = train(small(epochs=1), tmp_path / "b", progress=False)
    c = train(small(epochs=1, seed=1), tmp_path / "c", progress=False)
    assert a["test_acc"] == b["test_acc"] and a["final_train_loss"] == b["final_train_loss"]
    assert_same_state(final_state(tmp_path / "a"), final_state(tmp_path / "b"))
    assert a["final_train_loss"] != c["final_train_loss"]


def test_lr_schedule_options_and_label_smoothing_run(tmp_path):
    config = small(
        epochs=2, lr_schedule="cosine", warmup_epochs=1, label_smoothing=0.1, nesterov=False
    )
    result = train(config, tmp_path, progress=False)
    lrs = [r["lr"] for r in read_metrics(tmp_path / "metrics.jsonl") if r["kind"] == "epoch"]
    assert result["status"] == "done"
    assert lrs[0] == pytest.approx(config.lr)  # end of warm-up
    assert lrs[1] == pytest.approx(0.0, abs=1e-3)  # end of the cosine


def test_start_similarity_is_recorded_and_leaves_the_run_unchanged(tmp_path):
    plain = train(small(epochs=1, dropout=0.1), tmp_path / "plain", progress=False)
    config = small(
        epochs=1, dropout=0.1, shadow_criteria=("snip", "random"), start_similarity=(0.5, 0.25)
    )
    measured = train(config, tmp_path / "measured", progress=False)

    records = read_metrics(tmp_path / "measured" / "metrics.jsonl")
    start = [r for r in records if r["kind"] == "start_similarity"]
    assert [r["fraction"] for r in start] == [0.5, 0.25]
    assert records[:2] == start  # before any training record
    sim = start[0]["similarity"]
    assert sim["criteria"] == ["magnitude", "snip", "random"]
    assert [row[i] for i, row in enumerate(sim["pooled"])] == [1.0, 1.0, 1.0]
    assert plain["final_train_loss"] == measured["final_train_loss"]
    assert_same_state(final_state(tmp_path / "plain"), final_state(tmp_path / "measured"))


def _nan_after(calls: int, monkeypatch):
    """Make the model's training forward pass return NaN from call `calls + 1` on."""
    real = dstlab.models.create_model
    count = {"n": 0}

    def create(*args, **kwargs):
        model = real(*args, **kwargs)

        def hook(module, inputs, output):
            if module.training:
                count["n"] += 1
                if count["n"] > calls:
                    return output * float("nan")
            return output

        model.register_forward_hook(hook)
        return model

    monkeypatch.setattr(dstlab.models, "create_model", create)


def test_nan_loss_ends_the_run_as_diverged_keeping_metrics(tmp_path, monkeypatch):
    _nan_after(30, monkeypatch)  # epoch 1 has 21 steps
    result = train(small(epochs=3), tmp_path, progress=False)

    assert result["status"] == "diverged"
    assert result["diverged_step"] == 31
    assert result["epochs"] == 1 and result["steps"] == 30
    assert result["test_acc"] is None and result["best_val_acc"] is not None
    assert result["test_acc_best_val"] > 0.3  # the epoch-1 model is still tested
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["epoch"] for r in records if r["kind"] == "epoch"] == [1]
    assert [r["step"] for r in records if r["kind"] == "update"] == [10, 20]
    assert json.loads((tmp_path / "result.json").read_text())["status"] == "diverged"


def test_huge_learning_rate_diverges(tmp_path):
    result = train(small(mode="dense", lr=1e6), tmp_path, progress=False)
    assert result["status"] == "diverged" and result["diverged_step"] >= 1


def test_an_exception_writes_a_failed_result_and_is_raised(tmp_path, monkeypatch):
    real = dstlab.models.create_model

    def broken(*args, **kwargs):
        model = real(*args, **kwargs)

        def hook(module, inputs, output):
            raise RuntimeError("kaboom")

        model.register_forward_hook(hook)
        return model

    monkeypatch.setattr(dstlab.models, "create_model", broken)
    with pytest.raises(RuntimeError, match="kaboom"):
        train(small(), tmp_path, progress=False)
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["status"] == "failed" and "kaboom" in result["error"]


def test_a_finished_directory_is_not_overwritten_and_resume_returns_its_result(tmp_path):
    first = train(small(epochs=1), tmp_path, progress=False)
    with pytest.raises(ConfigError, match="already holds a run"):
        train(small(epochs=1), tmp_path, progress=False)
    assert train(small(epochs=1), tmp_path, resume=True, progress=False) == first
    with pytest.raises(ConfigError, match="density"):
        train(small(epochs=1, density=0.2), tmp_path, resume=True, progress=False)


@pytest.mark.slow
def test_resume_from_a_mid_epoch_checkpoint_equals_an_uninterrupted_run(tmp_path, monkeypatch):
    """In-process twin of the SIGKILL test: the run dies mid-epoch 2, after mid-epoch
    checkpoints, then resumes from the last one."""
    config = small(dropout=0.1, checkpoint_seconds=0.0)
    whole = train(config, tmp_path / "whole", progress=False)

    real = dstlab.models.create_model

    def dies_at_step_33(*args, **kwargs):
        model = real(*args, **kwargs)
        calls = {"n": 0}

        def hook(module, inputs, output):
            if module.training:
                calls["n"] += 1
                if calls["n"] == 33:
                    raise KeyboardInterrupt  # not an Exception: no result.json is written
            return output

        model.register_forward_hook(hook)
        return model

    with monkeypatch.context() as patch:
        patch.setattr(dstlab.models, "create_model", dies_at_step_33)
        with pytest.raises(KeyboardInterrupt):
            train(config, tmp_path / "cut", progress=False)
    ckpt = load_checkpoint(tmp_path / "cut" / "checkpoint.pt")
    assert ckpt["position"] == {"epoch": 1, "batch": 11, "step": 32}
    resumed = train(config, tmp_path / "cut", resume=True, progress=False)

    for key in ("test_acc", "test_acc_best_val", "best_val_acc", "final_train_loss", "steps"):
        assert resumed[key] == whole[key], key
    assert_same_state(final_state(tmp_path / "whole"), final_state(tmp_path / "cut"))
    strip = [
        {k: v for k, v in r.items() if k != "seconds"}
        for r in read_metrics(tmp_path / "whole" / "metrics.jsonl")
    ]
    again = [
        {k: v for k, v in r.items() if k != "seconds"}
        for r in read_metrics(tmp_path / "cut" / "metrics.jsonl")
    ]
    assert again == strip


def test_checkpoint_holds_everything_a_resume_needs(tmp_path):
    train(small(epochs=1), tmp_path, progress=False)
    ckpt = load_checkpoint(tmp_path / "checkpoint.pt")
    assert {"model", "optimizer", "dst", "rng", "best", "history", "position"} <= ckpt.keys()
    assert ckpt["position"] == {"epoch": 1, "batch": 0, "step": 21}
    assert ckpt["metrics_bytes"] == (tmp_path / "metrics.jsonl").stat().st_size
    assert isinstance(ckpt["rng"]["global"]["cpu"], torch.Tensor)
    assert not list(tmp_path.glob(".*.tmp"))


def _binary_dataset(*args, **kwargs):
    """A separable two-class problem in the shape of a Higgs-like dataset (num_classes == 1)."""
    from dstlab.data import Dataset, TensorSplit
    from dstlab.data.transforms import FloatInput

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(900, 24, generator=gen)
    y = (x[:, :3].sum(1) > 0).float()
    split = [TensorSplit(x[i : i + 300], y[i : i + 300]) for i in (0, 300, 600)]
    return Dataset("binary", *split, input_shape=(24,), num_classes=1, preprocess=FloatInput())


def test_a_binary_task_trains_with_bce_on_one_logit(tmp_path, monkeypatch):
    monkeypatch.setattr(dstlab.data, "load_dataset", _binary_dataset)
    config = small(epochs=10, model="mlp_higgs", label_smoothing=0.1, density=0.5)
    result = train(config, tmp_path, progress=False)
    assert result["status"] == "done"
    assert result["test_acc"] > 0.8
    assert result["final_train_loss"] > 0.1  # label smoothing keeps the BCE above 0


def test_without_validation_the_final_model_stands_in_for_the_best(tmp_path):
    result = train(small(epochs=1, val_fraction=0.0), tmp_path, progress=False)
    assert result["best_val_acc"] is None and result["best_val_epoch"] is None
    assert result["test_acc_best_val"] == result["test_acc"]
