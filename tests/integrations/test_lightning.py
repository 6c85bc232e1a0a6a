"""Lightning's Trainer with DSTCallback: exact sparsity at every step, logged update records,
and a resume from a mid-training checkpoint that matches an uninterrupted fit."""

from __future__ import annotations

import csv

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

pl = pytest.importorskip("lightning.pytorch")

from dstlab.integrations.lightning import DSTCallback  # noqa: E402
from tests.integrations.conftest import (  # noqa: E402
    RecordingSGD,
    assert_exactly_sparse,
    inactive_gradient,
    masked_density,
)

DENSITY = 0.25


class TinyModule(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 4))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)


def _loader() -> DataLoader:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(64, 8, generator=gen)
    y = torch.randint(0, 4, (64,), generator=gen)
    return DataLoader(TensorDataset(x, y), batch_size=8, shuffle=False)


class CheckEveryStep(pl.Callback):
    """DESIGN §3 after every optimizer step (between accumulated batches the gradients are
    still being summed, so only weights and state are final there)."""

    def __init__(self, dst_callback: DSTCallback) -> None:
        self.dst_callback = dst_callback
        self.checked = 0
        self.last_step = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step > self.last_step:
            assert_exactly_sparse(self.dst_callback.dst)
            self.checked += 1
            self.last_step = trainer.global_step


def _trainer(tmp_path, callbacks, **kwargs) -> pl.Trainer:
    return pl.Trainer(
        max_epochs=2,
        callbacks=callbacks,
        default_root_dir=tmp_path,
        logger=pl.loggers.CSVLogger(tmp_path, name="logs"),
        enable_progress_bar=False,
        enable_model_summary=False,
        deterministic=True,
        **kwargs,
    )


def test_fit_keeps_density_and_invariants_and_logs_the_records(tmp_path):
    dst_cb = DSTCallback(density=DENSITY, distribution="uniform", update_every=3, seed=0)
    check = CheckEveryStep(dst_cb)
    trainer = _trainer(tmp_path, [dst_cb, check])
    trainer.fit(TinyModule(), _loader())
    dst = dst_cb.dst
    assert check.checked == 16 and dst.step_count == 16
    assert masked_density(dst) == pytest.approx(DENSITY, abs=1 / 256)
    assert len(dst.records) >= 4 and all(r["layers"] for r in dst.records)
    assert any(layer["grown"] > 0 for r in dst.records for layer in r["layers"].values())
    with open(trainer.logger.log_dir + "/metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("dst/density")]
    assert [int(r["step"]) for r in rows] == [r["step"] for r in dst.records]
    assert float(rows[-1]["dst/itop"]) == pytest.approx(dst.records[-1]["itop"])
    assert float(rows[0]["dst/removed"]) == sum(
        layer["removed"] for layer in dst.records[0]["layers"].values()
    )
    # the optimizer has its own step back once the fit is over
    assert "step" not in dst.optimizer.__dict__


def test_dst_counts_optimizer_steps_under_gradient_accumulation(tmp_path):
    dst_cb = DSTCallback(density=DENSITY, update_every=2, seed=0)
    check = CheckEveryStep(dst_cb)
    trainer = _trainer(tmp_path, [dst_cb, check], accumulate_grad_batches=2)
    trainer.fit(TinyModule(), _loader())
    assert dst_cb.dst.step_count == trainer.global_step == check.checked == 8
    assert [r["step"] for r in dst_cb.dst.records] == [2, 4, 6]


def test_resume_from_a_mid_training_checkpoint_matches_an_uninterrupted_fit(tmp_path):
    options = {"density": DENSITY, "grow": "gradient", "update_every": 3, "seed": 0}
    saver = pl.callbacks.ModelCheckpoint(
        dirpath=tmp_path / "ckpt", save_top_k=-1, every_n_epochs=1, filename="{epoch}"
    )
    whole_cb = DSTCallback(**options)
    whole = TinyModule()
    _trainer(tmp_path / "a", [whole_cb, saver]).fit(whole, _loader())

    resumed_cb = DSTCallback(**options)
    resumed = TinyModule()
    _trainer(tmp_path / "b", [resumed_cb, CheckEveryStep(resumed_cb)]).fit(
        resumed, _loader(), ckpt_path=tmp_path / "ckpt" / "epoch=0.ckpt"
    )
    assert resumed_cb.dst.step_count == whole_cb.dst.step_count == 16
    for name, mask in whole_cb.dst.masks.items():
        assert torch.equal(resumed_cb.dst.masks[name], mask), name
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    # a checkpoint holds no update records (they went to the loggers); the resumed session
    # records the updates after its resume point, the same as the uninterrupted fit's
    ckpt = torch.load(tmp_path / "ckpt" / "epoch=0.ckpt", weights_only=False)
    resumed_from = ckpt["dstlab"]["step"]
    assert "records" not in ckpt["dstlab"]
    after = [r for r in whole_cb.dst.records if r["step"] >= resumed_from]
    assert after and resumed_cb.dst.records == after


def test_bf16_mixed_precision_keeps_exact_sparsity(tmp_path):
    dst_cb = DSTCallback(density=DENSITY, update_every=3, seed=0)
    trainer = _trainer(tmp_path, [dst_cb, CheckEveryStep(dst_cb)], precision="bf16-mixed")
    trainer.fit(TinyModule(), _loader())
    assert dst_cb.dst.step_count == 16
    assert masked_density(dst_cb.dst) == pytest.approx(DENSITY, abs=1 / 256)


class ClippedModule(TinyModule):
    """Records the inactive gradients after each backward, before DST masks them."""

    def __init__(self, dst_callback: DSTCallback) -> None:
        super().__init__()
        self.dst_callback, self.unmasked = dst_callback, []
        self.optimizer = RecordingSGD(self.parameters(), lr=0.1, momentum=0.9)

    def configure_optimizers(self):
        return self.optimizer

    def on_after_backward(self):
        self.unmasked.append(inactive_gradient(self.dst_callback.dst))


@pytest.mark.parametrize("precision", ["32-true", "16-mixed"])
def test_gradient_clipping_clips_the_masked_gradients(tmp_path, precision):
    dst_cb = DSTCallback(density=DENSITY, grow="gradient", update_every=3, seed=0)
    module = ClippedModule(dst_cb)
    extra = {"gradient_clip_val": 0.01}
    if precision == "16-mixed":  # Lightning's AMP plugin with a CPU GradScaler
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
        extra["plugins"] = [pl.plugins.MixedPrecision("16-mixed", "cpu", scaler=scaler)]
    trainer = _trainer(tmp_path, [dst_cb, CheckEveryStep(dst_cb)], **extra)
    trainer.fit(module, _loader())
    norms = module.optimizer.applied_norms
    assert len(norms) == len(module.unmasked) == dst_cb.dst.step_count == 16
    assert all(inactive > 0 for inactive in module.unmasked)
    assert norms == pytest.approx([0.01] * 16, rel=1e-4)


def test_an_amp_overflow_step_never_reaches_dst(tmp_path):
    dst_cb = DSTCallback(density=DENSITY, grow="gradient", update_every=3, seed=0)
    module = TinyModule()
    calls = {"n": 0}

    def overflow_on_the_fourth_backward(grad):
        calls["n"] += 1
        return torch.full_like(grad, float("inf")) if calls["n"] == 4 else grad

    module.net[0].weight.register_hook(overflow_on_the_fourth_backward)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    plugin = pl.plugins.MixedPrecision("16-mixed", "cpu", scaler=scaler)
    trainer = _trainer(tmp_path, [dst_cb, CheckEveryStep(dst_cb)], plugins=[plugin])
    trainer.fit(module, _loader())
    assert scaler.get_scale() == 2.0**9
    assert dst_cb.dst.step_count == 15  # the skipped step is not one of DST's
    assert [r["step"] for r in dst_cb.dst.records] == [3, 6, 9, 12]
