"""Sparsify the Linear layers of a small BERT (built from a config, nothing downloaded) while the
Hugging Face Trainer trains it: 20% of all weight matrices active, with the embeddings kept
dense, so the Linear layers hold what is left of that budget.

    pip install "dstlab[integrations]"
    python examples/sparse_transformer_trainer.py
"""

from __future__ import annotations

import tempfile

import torch
import transformers

from dstlab.integrations.transformers import DSTCallback


class RandomTokens(torch.utils.data.Dataset):
    """Sequences of random tokens labelled by whether the first token is in the upper half."""

    def __init__(self, n: int = 64, length: int = 16, vocab: int = 100) -> None:
        gen = torch.Generator().manual_seed(0)
        self.ids = torch.randint(0, vocab, (n, length), generator=gen)
        self.labels = (self.ids[:, 0] >= vocab // 2).long()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


def main() -> None:
    config = transformers.BertConfig(
        vocab_size=100,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=32,
        num_labels=2,
    )
    model = transformers.BertForSequenceClassification(config)
    dst = DSTCallback(density=0.2, distribution="uniform", dense_layers=["*embeddings*"],
                      update_every=4)  # fmt: skip
    with tempfile.TemporaryDirectory() as out:
        args = transformers.TrainingArguments(
            output_dir=out, num_train_epochs=2, per_device_train_batch_size=8, report_to=[],
            save_strategy="no", use_cpu=True, disable_tqdm=True,
        )  # fmt: skip
        transformers.Trainer(
            model=model, args=args, train_dataset=RandomTokens(), callbacks=[dst]
        ).train()
    masks = dst.dst.masks
    active = sum(int(m.sum()) for m in masks.values()) / sum(m.numel() for m in masks.values())
    print(f"density {dst.dst.current_density():.3f}; {len(masks)} sparse Linear weights with "
          f"{active:.3f} of their weights active; {len(dst.dst.records)} topology updates")  # fmt: skip


if __name__ == "__main__":
    main()
