"""One run's scale options in one process: precision, accumulate, compile, and how nproc enters
a run's identity."""

from __future__ import annotations

import pytest
import torch

from dstlab.errors import ConfigError
from dstlab.run import RunConfig, train
from dstlab.run.files import load_checkpoint, read_metrics

from .conftest import final_state, small

pytestmark = pytest.mark.usefixtures("quiet_threads")


def test_identity_holds_the_global_batch_not_the_process_count():
    assert RunConfig(nproc=2, batch_size=16).identity() == RunConfig(batch_size=32).identity()
    assert RunConfig(batch_size=32).identity()["batch_size"] == 32
    assert RunConfig(compile=True).identity() == RunConfig().identity()
    assert RunConfig(precision="bf16").identity() != RunConfig().identity()
    assert RunConfig.from_dict({"precision": 32}).precision == "32"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"precision": "fp8"}, "precision must be one of 32, bf16, fp16"),
        ({"accumulate": 0}, r"accumulate must be a whole number in \[1, inf\), got 0\."),
        ({"nproc": 0}, r"nproc must be a whole number in \[1, inf\), got 0\."),
    ],
)
def test_bad_scale_options_are_one_sentence(values, message):
    with pytest.raises(ConfigError, match=message):
        RunConfig.from_dict(values)


def _masks_and_weights_agree(a, b) -> None:
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=1e-4, atol=1e-5)
    for key in a["masks"]:
        assert torch.equal(a["masks"][key], b["masks"][key]), key


@pytest.mark.slow
def test_accumulating_two_micro_batches_equals_one_batch_twice_as_large(tmp_path):
    whole = train(small(epochs=1, batch_size=64, update_every=5), tmp_path / "a", progress=False)
    parts = train(
        small(epochs=1, batch_size=32, accumulate=2, update_every=5), tmp_path / "b", progress=False
    )
    assert parts["steps"] == whole["steps"] == 21  # optimizer steps, not micro-batches
    steps = [
        [r["step"] for r in read_metrics(tmp_path / d / "metrics.jsonl") if r["kind"] == "update"]
        for d in ("a", "b")
    ]
    assert steps[0] == steps[1] == [5, 10, 15, 20]  # ΔT counts optimizer steps
    _masks_and_weights_agree(final_state(tmp_path / "a"), final_state(tmp_path / "b"))
    assert parts["final_train_loss"] == pytest.approx(whole["final_train_loss"], rel=1e-5)


@pytest.mark.slow
def test_bf16_autocast_trains_digits_like_float32(tmp_path):
    results = {
        p: train(small(epochs=4, lr=0.1, precision=p), tmp_path / p, progress=False)
        for p in ("32", "bf16")
    }
    assert results["32"]["test_acc"] > 0.85
    assert results["bf16"]["test_acc"] > results["32"]["test_acc"] - 0.04


@pytest.mark.slow
def test_fp16_run_keeps_its_scaler_in_the_checkpoint(tmp_path):
    result = train(small(epochs=1, precision="fp16"), tmp_path, progress=False)
    assert result["status"] == "done" and result["test_acc"] > 0.5
    ckpt = load_checkpoint(tmp_path / "checkpoint.pt")
    assert ckpt["scaler"]["scale"] > 0
    for name, mask in ckpt["dst"]["masks"].items():
        assert not ckpt["model"][name][~mask].any(), name


@pytest.mark.slow
def test_compiled_run_keeps_masking_exact(tmp_path, monkeypatch):
    plain = train(small(epochs=1), tmp_path / "plain", progress=False)
    compile_ = torch.compile
    monkeypatch.setattr(torch, "compile", lambda m: compile_(m, backend="aot_eager"))
    compiled = train(small(epochs=1, compile=True), tmp_path / "compiled", progress=False)
    assert compiled["steps"] == plain["steps"]
    a, b = final_state(tmp_path / "plain"), final_state(tmp_path / "compiled")
    _masks_and_weights_agree(a, b)
    for name, mask in b["masks"].items():
        assert not b["model"][name][~mask].any(), name
