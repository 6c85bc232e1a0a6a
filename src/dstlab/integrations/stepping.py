"""DST's step in place of an optimizer's own `step`, for training loops we do not own.

Frameworks call ``optimizer.step(closure)`` (Lightning: the closure runs the forward, backward
and gradient clipping) or ``optimizer.step()`` after clipping (Hugging Face, AMP's GradScaler).
Either way the gradients are final when the closure has run, so the wrapper runs the closure
first and then ``DST.step()``, which masks the gradients, updates the topology when due and
calls the real step. Clipping must see the masked gradients the optimizer will apply, so each
callback has DST's `before_optimizer_step` run before the framework clips (Lightning: its
``on_before_optimizer_step`` hook) or clips them itself (Hugging Face: ``before_step``). A step
Lightning skips (an AMP overflow) never reaches the optimizer, so DST does not count it; the
Hugging Face callback wraps accelerate's optimizer, whose scaler skips inside the step, so
there DST counts every step, as the Trainer's ``global_step`` does."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from dstlab.topology.engine import DST


class DSTStep:
    """Installs ``dst.step`` as ``dst.optimizer.step``; `uninstall()` puts the original back."""

    def __init__(
        self,
        dst: DST,
        on_record: Callable[[dict[str, Any]], None] | None = None,
        before_step: Callable[[], None] | None = None,
    ):
        self.dst = dst
        self.on_record = on_record
        self.before_step = before_step  # between the final gradients and DST's step
        self.optimizer = dst.optimizer
        self._original = self.optimizer.step
        # an LR scheduler may already have wrapped `step` on the instance; put back what was there
        self._had_own_step = "step" in self.optimizer.__dict__
        self._inside = False

        def step(closure: Callable[[], Any] | None = None, **kwargs: Any) -> Any:
            return self._step(closure, **kwargs)

        # an LR scheduler's wrapper marks itself, and the scheduler warns when the mark is gone;
        # it is still called (it is the original here), so the mark stays true
        if getattr(self._original, "_wrapped_by_lr_sched", False):
            step._wrapped_by_lr_sched = True  # type: ignore[attr-defined]
        self.optimizer.step = step  # type: ignore[method-assign]

    def _step(self, closure: Callable[[], Any] | None = None, **kwargs: Any) -> Any:
        if self._inside:  # DST.step() calling the real optimizer step
            return self._original(**kwargs) if closure is None else self._original(closure)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._inside = True
        try:
            if self.before_step is not None:
                self.before_step()
            record = self.dst.step()
        finally:
            self._inside = False
        if record is not None and self.on_record is not None:
            self.on_record(record)
        return loss

    def uninstall(self) -> None:
        if self._had_own_step:
            self.optimizer.step = self._original  # type: ignore[method-assign]
        else:
            del self.optimizer.step


def gradients_finite(parameters: Iterable[torch.Tensor]) -> bool:
    """Whether every gradient is finite (after a loss scaler's unscaling: its skip decision)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    return not grads or bool(torch.stack([g.isfinite().all() for g in grads]).all())


def build_dst(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    options: dict[str, Any],
    state: dict[str, Any] | None = None,
) -> DST:
    """`DST(model, optimizer, **options)`, continuing from a saved `DST.state_dict()` if given.

    A framework restores the weights (and perhaps the optimizer state) of a resumed run before it
    tells us to start: `DST.from_state` keeps them under the saved masks."""
    if state is None:
        return DST(model, optimizer, **options)
    return DST.from_state(model, optimizer, state, **options)


class DSTCallbackBase:
    """What both framework callbacks share: the `DST` keywords they were given, the engine once
    built, and DST's step installed on the optimizer for the length of one fit."""

    def __init__(
        self,
        density: float = 0.1,
        prune: str = "magnitude",
        grow: str = "random",
        **dst_options: Any,
    ) -> None:
        super().__init__()
        self.options = {"density": density, "prune": prune, "grow": grow, **dst_options}
        self.dst: Any = None
        self._step: DSTStep | None = None

    def _install(
        self,
        dst: DST,
        on_record: Callable[[dict[str, Any]], None],
        before_step: Callable[[], None] | None = None,
    ) -> None:
        self.dst = dst
        self._step = DSTStep(dst, on_record, before_step)

    def _uninstall(self) -> None:
        if self._step is not None:
            self._step.uninstall()
            self._step = None
