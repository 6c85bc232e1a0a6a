"""`DSTCallback` for PyTorch Lightning: Dynamic Sparse Training inside `Trainer.fit`.

At fit start it builds `DST` on the module's optimizer and installs DST's step in place of the
optimizer's (`stepping.DSTStep`), so Lightning's gradient accumulation, precision plugin and
gradient clipping run unchanged and DST counts real optimizer steps. Lightning calls
``on_before_optimizer_step`` after the backward (and AMP's unscaling) and before it clips, so
DST masks the gradients (and updates the topology when due) there: clipping sees what the
optimizer applies. Update records go to every logger of the trainer; DST state travels in
Lightning checkpoints, so ``fit(ckpt_path=...)`` continues the same topology."""

from __future__ import annotations

from typing import Any

from dstlab.errors import ConfigError
from dstlab.integrations import require
from dstlab.integrations.records import flat_record
from dstlab.integrations.stepping import DSTCallbackBase, build_dst, gradients_finite

pl = require("lightning.pytorch", "lightning")

CHECKPOINT_KEY = "dstlab"


class DSTCallback(DSTCallbackBase, pl.Callback):
    """Sparse training of the LightningModule: ``Trainer(callbacks=[DSTCallback(density=0.1)])``.

    Keywords are those of `dstlab.DST`; ``total_steps`` defaults to the trainer's estimate of
    its optimizer steps (which accounts for gradient accumulation)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pending: dict[str, Any] | None = None

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        if len(trainer.optimizers) != 1:
            raise ConfigError(
                f"DSTCallback needs exactly one optimizer; the module configured {len(trainer.optimizers)}."
            )
        options = dict(self.options)
        options.setdefault("total_steps", max(1, int(trainer.estimated_stepping_batches)))
        dst = build_dst(pl_module, trainer.optimizers[0], options, self._pending)
        self._pending = None
        self._install(dst, lambda record: self._log(trainer, record))

    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
        if self.dst is None:
            return
        params = [p for p in pl_module.parameters() if p.grad is not None]
        if not params:  # training_step returned None: no backward, nothing to mask
            return
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        if scaler is not None and not gradients_finite(params):
            # AMP skips this optimizer step, so it never reaches DST; the inactive gradients
            # are zeroed all the same (masking would turn inf into NaN)
            self.dst.enforce()
            return
        self.dst.before_optimizer_step()

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        self._uninstall()

    def _log(self, trainer: Any, record: dict[str, Any]) -> None:
        metrics = flat_record(record)
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=record["step"])

    def on_save_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        if self.dst is not None:
            checkpoint[CHECKPOINT_KEY] = self.dst.state_dict()

    def on_load_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get(CHECKPOINT_KEY)
        if state is None:
            return
        if self.dst is None:  # restored before fit start: applied when DST is built
            self._pending = state
        else:
            self.dst.load_state_dict(state)
