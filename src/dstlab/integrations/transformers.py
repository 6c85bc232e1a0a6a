"""`DSTCallback` for the Hugging Face `transformers.Trainer`: Dynamic Sparse Training of any model
the Trainer trains.

At train begin it builds `DST` on the Trainer's optimizer and installs DST's step in place of the
optimizer's (`stepping.DSTStep`): the Trainer accumulates gradients and clips them as usual and
DST counts real optimizer steps. Each checkpoint folder gets the DST state (``dst_state.pt``);
``trainer.train(resume_from_checkpoint=...)`` continues the same topology. Update records go to
``trainer.state.log_history`` (also saved with every checkpoint)."""

from __future__ import annotations

import os
from typing import Any

import torch

from dstlab.errors import ConfigError
from dstlab.integrations import require
from dstlab.integrations.records import flat_record
from dstlab.integrations.stepping import DSTCallbackBase, build_dst

transformers = require("transformers")

STATE_FILE = "dst_state.pt"


class DSTCallback(DSTCallbackBase, transformers.TrainerCallback):
    """Sparse training under ``Trainer(..., callbacks=[DSTCallback(density=0.1)])``.

    Keywords are those of `dstlab.DST` (e.g. ``dense_layers=["*embeddings*"]`` keeps embeddings
    dense); ``total_steps`` defaults to the Trainer's ``max_steps``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._new: list[dict[str, Any]] = []

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        if getattr(optimizer, "scaler", None) is not None:
            raise ConfigError(
                "DSTCallback does not support fp16 loss scaling; train with bf16 or full precision."
            )
        raw = getattr(optimizer, "optimizer", optimizer)  # accelerate wraps the torch optimizer
        options = dict(self.options)
        options.setdefault("total_steps", max(1, int(state.max_steps)))
        saved = _load_state(args, state) if state.global_step > 0 else None
        self._install(build_dst(model, raw, options, saved), self._new.append)

    def on_step_end(self, args, state, control, **kwargs):
        for record in self._new:
            state.log_history.append({**flat_record(record), "step": record["step"]})
        self._new.clear()

    def on_save(self, args, state, control, **kwargs):
        folder = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
        if self.dst is not None and os.path.isdir(folder):
            torch.save(self.dst.state_dict(), os.path.join(folder, STATE_FILE))

    def on_train_end(self, args, state, control, **kwargs):
        self._uninstall()


def _load_state(args: Any, state: Any) -> dict[str, Any]:
    """The DST state of the checkpoint the Trainer resumed from (the Trainer does not tell its
    callbacks which one: ``args.resume_from_checkpoint`` if set, else ``checkpoint-<step>``)."""
    folders = [os.path.join(args.output_dir, f"checkpoint-{state.global_step}")]
    if isinstance(args.resume_from_checkpoint, str):
        folders.insert(0, args.resume_from_checkpoint)
    for folder in folders:
        path = os.path.join(folder, STATE_FILE)
        if os.path.isfile(path):
            saved = torch.load(path, map_location="cpu", weights_only=False)
            if saved["step"] == state.global_step:
                return saved
    raise ConfigError(
        f"the Trainer resumed at step {state.global_step} but no {STATE_FILE} of that step is in "
        f"{' or '.join(folders)}; set TrainingArguments(resume_from_checkpoint=...) to its folder."
    )
