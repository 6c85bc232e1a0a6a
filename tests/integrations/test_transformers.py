"""The Hugging Face Trainer with DSTCallback on a tiny BERT built from a config (no download):
exact sparsity at every step, records in the log history, and resume from a checkpoint."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from dstlab.integrations.transformers import STATE_FILE, DSTCallback  # noqa: E402
from tests.integrations.conftest import (  # noqa: E402
    RecordingSGD,
    assert_exactly_sparse,
    inactive_gradient,
)

DENSITY = 0.5
OPTIONS = {
    "density": DENSITY,
    "distribution": "uniform",
    "dense_layers": ["*embeddings*"],
    "update_every": 3,
    "seed": 0,
}


class Dataset(torch.utils.data.Dataset):
    def __init__(self) -> None:
        gen = torch.Generator().manual_seed(1)
        self.ids = torch.randint(0, 20, (32, 12), generator=gen)
        self.labels = (self.ids[:, 0] > 9).long()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


def _model():
    config = transformers.BertConfig(
        vocab_size=20,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
        num_labels=2,
        hidden_dropout_prob=0.0,  # the dropout stream does not resume bit-exactly
        attention_probs_dropout_prob=0.0,
    )
    torch.manual_seed(0)
    return transformers.BertForSequenceClassification(config)


class CheckEveryStep(transformers.TrainerCallback):
    def __init__(self, dst_callback: DSTCallback) -> None:
        self.dst_callback, self.checked = dst_callback, 0

    def on_optimizer_step(self, args, state, control, **kwargs):
        assert_exactly_sparse(self.dst_callback.dst)
        self.checked += 1


def _trainer(out, callbacks, model, optimizers=(None, None), **kwargs):
    args = transformers.TrainingArguments(
        output_dir=str(out),
        num_train_epochs=2,
        per_device_train_batch_size=8,
        learning_rate=1e-2,
        save_strategy="epoch",
        logging_strategy="no",
        report_to=[],
        use_cpu=True,
        seed=0,
        data_seed=0,
        disable_tqdm=True,
        **kwargs,
    )
    return transformers.Trainer(
        model=model, args=args, train_dataset=Dataset(), callbacks=callbacks, optimizers=optimizers
    )


@pytest.mark.slow
def test_trainer_keeps_density_invariants_and_logs_records(tmp_path):
    dst_cb = DSTCallback(**OPTIONS)
    check = CheckEveryStep(dst_cb)
    trainer = _trainer(tmp_path, [dst_cb, check], _model(), gradient_accumulation_steps=2)
    trainer.train()
    dst = dst_cb.dst
    assert check.checked == dst.step_count == trainer.state.global_step == 4
    assert not any("embeddings" in name for name in dst.masks)
    assert dst.current_density() == pytest.approx(DENSITY, abs=0.01)
    logged = [h for h in trainer.state.log_history if "dst/density" in h]
    assert [h["step"] for h in logged] == [r["step"] for r in dst.records] == [3]
    assert logged[0]["dst/grown"] > 0
    assert (tmp_path / "checkpoint-2" / STATE_FILE).is_file()


@pytest.mark.slow
def test_resume_from_checkpoint_matches_an_uninterrupted_run(tmp_path):
    whole_cb, whole = DSTCallback(**OPTIONS), _model()
    _trainer(tmp_path / "a", [whole_cb], whole).train()
    resumed_cb, resumed = DSTCallback(**OPTIONS), _model()
    trainer = _trainer(tmp_path / "a", [resumed_cb, CheckEveryStep(resumed_cb)], resumed)
    trainer.train(resume_from_checkpoint=str(tmp_path / "a" / "checkpoint-4"))
    assert resumed_cb.dst.step_count == whole_cb.dst.step_count == 8
    for name, mask in whole_cb.dst.masks.items():
        assert torch.equal(resumed_cb.dst.masks[name], mask), name
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


class InactiveBeforeMasking(transformers.TrainerCallback):
    """The inactive gradients right before the optimizer step: the Trainer's view, unmasked."""

    def __init__(self, dst_callback: DSTCallback) -> None:
        self.dst_callback, self.seen = dst_callback, []

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self.seen.append(inactive_gradient(self.dst_callback.dst))


@pytest.mark.slow
def test_the_trainer_clips_the_masked_gradients(tmp_path):
    dst_cb = DSTCallback(**OPTIONS)
    seen = InactiveBeforeMasking(dst_cb)
    model = _model()
    optimizer = RecordingSGD(model.parameters(), lr=0.01)
    trainer = _trainer(
        tmp_path, [dst_cb, seen], model, optimizers=(optimizer, None), max_grad_norm=0.01
    )
    trainer.train()
    assert len(optimizer.applied_norms) == len(seen.seen) == trainer.state.global_step == 8
    assert all(inactive > 0 for inactive in seen.seen)
    assert optimizer.applied_norms == pytest.approx([0.01] * 8, rel=1e-4)
    assert trainer.args.max_grad_norm == 0.01  # given back after the fit


class Overflow(transformers.TrainerCallback):
    """An infinite gradient in the backward of the optimizer step after `at` (before scaling
    is undone, so the scaler sees it as an overflow)."""

    def __init__(self, weight: torch.Tensor, at: int) -> None:
        self.at, self.on, self.weights = at, False, {}
        weight.register_hook(lambda g: torch.full_like(g, float("inf")) if self.on else g)

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        self.on = state.global_step == self.at
        self.weights[state.global_step] = {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.slow
def test_fp16_loss_scaling_skips_an_overflow_and_postpones_the_update(tmp_path):
    """On the CPU accelerate gives fp16 no GradScaler; the test hands it one, as it does on a
    GPU, so the Trainer scales, unscales and skips through it."""
    dst_cb = DSTCallback(**OPTIONS)
    model = _model()
    overflow = Overflow(model.classifier.weight, at=3)  # an update step (update_every=3)
    check = CheckEveryStep(dst_cb)
    trainer = _trainer(tmp_path, [dst_cb, overflow, check], model, fp16=True)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    trainer.accelerator.scaler, trainer.accelerator.native_amp = scaler, True
    trainer.train()
    dst = dst_cb.dst
    assert dst.step_count == trainer.state.global_step == check.checked == 8
    assert scaler.get_scale() == 2.0**9  # one overflow, no growth within 8 steps
    skipped, after = overflow.weights[3], overflow.weights[4]
    assert all(torch.equal(skipped[k], after[k]) for k in skipped)  # no optimizer step
    assert [(r["step"], r.get("postponed_from")) for r in dst.records] == [(4, 3), (6, None)]
    assert (tmp_path / "checkpoint-4" / STATE_FILE).is_file()
