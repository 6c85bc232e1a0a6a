"""`DSTCallback` for the Hugging Face `transformers.Trainer`: Dynamic Sparse Training of any model
the Trainer trains.

At train begin it builds `DST` on the optimizer the Trainer steps (accelerate's wrapper, whose
fp16 GradScaler skips a step that overflows) and installs DST's step in place of that
optimizer's (`stepping.DSTStep`): the Trainer accumulates gradients as usual and DST counts its
optimizer steps, skipped ones included, as the Trainer's ``global_step`` does. The Trainer clips
before any callback could mask, so the callback takes the clipping over: the Trainer's
``max_grad_norm`` becomes infinite for the fit (it still measures, and with fp16 unscales, the
gradients) and DST clips the masked gradients to the given norm right before the optimizer
step. Each checkpoint folder gets the DST state (``dst_state.pt``);
``trainer.train(resume_from_checkpoint=...)`` continues the same topology. Update records go to
``trainer.state.log_history`` (also saved with every checkpoint)."""

from __future__ import annotations

import os
from typing import Any

import torch

from dstlab.errors import ConfigError
from dstlab.integrations import require
from dstlab.integrations.records import flat_record
from dstlab.integrations.stepping import DSTCallbackBase, build_dst, gradients_finite

transformers = require("transformers")

STATE_FILE = "dst_state.pt"


class DSTCallback(DSTCallbackBase, transformers.TrainerCallback):
    """Sparse training under ``Trainer(..., callbacks=[DSTCallback(density=0.1)])``.

    Keywords are those of `dstlab.DST` (e.g. ``dense_layers=["*embeddings*"]`` keeps embeddings
    dense); ``total_steps`` defaults to the Trainer's ``max_steps``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._new: list[dict[str, Any]] = []
        self._scaler: Any = None
        self._args: Any = None
        self._given_norm: Any = None
        self._max_norm = 0.0

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        options = dict(self.options)
        options.setdefault("total_steps", max(1, int(state.max_steps)))
        saved = _load_state(args, state) if state.global_step > 0 else None
        scaler = getattr(optimizer, "scaler", None)  # accelerate's, with fp16
        self._scaler = scaler if scaler is not None and scaler.is_enabled() else None
        self._args, self._given_norm = args, args.max_grad_norm
        self._max_norm = float(args.max_grad_norm or 0.0)
        if self._max_norm > 0 or self._scaler is not None:
            # the Trainer would clip the unmasked gradients; an infinite norm leaves them as they
            # are but still unscaled (fp16), and `_before_step` clips the masked ones
            args.max_grad_norm = float("inf")
        # the optimizer the Trainer steps: with fp16 its scaler steps (or skips) the real one
        self._install(
            build_dst(model, optimizer, options, saved), self._new.append, self._before_step
        )

    def _before_step(self) -> None:
        """Mask the gradients (and update the topology when due), then clip what is left."""
        params = list(self.dst.model.parameters())
        finite = None if self._scaler is None else gradients_finite(params)
        self.dst.before_optimizer_step(finite)
        if self._max_norm > 0 and finite is not False:
            torch.nn.utils.clip_grad_norm_(params, self._max_norm)

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
        if self._args is not None:
            self._args.max_grad_norm = self._given_norm
            self._args = None


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
