"""The Hugging Face Trainer with DSTCallback on a tiny BERT built from a config (no download):
exact sparsity at every step, records in the log history, and resume from a checkpoint."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from dstlab.integrations.transformers import STATE_FILE, DSTCallback  # noqa: E402
from tests.integrations.conftest import assert_exactly_sparse  # noqa: E402

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


def _trainer(out, callbacks, model, **kwargs):
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
        model=model, args=args, train_dataset=Dataset(), callbacks=callbacks
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
