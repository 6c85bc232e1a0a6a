"""Runs that differ only in what the engine does train as one stacked model.

A study's small runs spend most of a step on per-step overhead, not arithmetic. Runs that share
the model, the dataset, epochs, batch size, optimizer and learning-rate schedule (everything but
the seed, the mode and the engine's options: `stack_key`) train together here: the members'
parameters and buffers are stacked along a leading member dimension, one forward and backward
pass (`torch.func.vmap` over `functional_call`) serves all of them, and one optimizer steps the
stacked tensors.

Each member is still a whole run (`loop._Run`): its data order, augmentation and engine come
from its own seed, its model's parameters, buffers and optimizer state are views of its slice
of the stacked tensors, so its own `DST` masks, prunes and regrows in place, and it writes its
own metrics, checkpoints (in the format a run alone writes, so it resumes alone or stacked) and
result. A member that diverges or fails ends alone; the others go on. The forward and backward
pass of a slice are those of the run alone: batched where this machine's batched matrix products
compute each member as the plain ones do, else one member at a time (`stacked_forward.py`;
`tests/run/test_stacked.py` holds masks and accuracies to it).

Stacking needs one process, float32, no accumulation, no torch.compile, no dropout (the shared
global generator would draw each member's dropout in another order) and the masked backend."""

from __future__ import annotations

import functools
import math
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from dstlab.errors import ConfigError
from dstlab.run import distributed, files, preemption
from dstlab.run.config import RunConfig, options_in
from dstlab.run.loop import (
    EVAL_BATCH,
    _clone_state,
    _Run,
    failure_record,
    open_run_dir,
    pick_device,
    start_run_dir,
    train,
)
from dstlab.run.losses import batch_loss
from dstlab.run.optim import lr_at
from dstlab.run.stacked_forward import StackedForward
from dstlab.topology.criteria import NonFiniteScoreError

# what members may differ in: the seed, the mode, the engine's options and where results go
MEMBER_OPTIONS = frozenset(
    {"seed", "mode", "checkpoint_seconds", "log", *options_in("topology", "update")}
)


def stack_key(config: RunConfig) -> tuple[Any, ...] | None:
    """What runs that train stacked share; None for a run that trains alone."""
    if (
        config.nproc > 1
        or config.accumulate > 1
        or config.compile
        or config.precision != "32"
        or config.dropout > 0
        or config.backend != "masked"
    ):
        return None
    values = config.to_dict()
    return tuple((k, repr(v)) for k, v in values.items() if k not in MEMBER_OPTIONS)


# on a CPU a stack gains only while the per-step overhead it shares outweighs what it adds:
# measured (benchmarks/study_throughput.py, 2 cores) 1.2x for MLPs of ~80k weights, but 0.7x
# for the CIFAR MLP (3.7M) and 0.9x for LeNet-5 (batched convolutions are slower on the CPU)
CPU_GAIN_MAX_WEIGHTS = 250_000


def stacking_pays(config: RunConfig) -> bool:
    """Whether runs like `config` train faster stacked: on a GPU always; on the CPU for small
    models without convolutions (`CPU_GAIN_MAX_WEIGHTS`)."""
    from dstlab.run.preflight import build_meta_model

    try:
        if pick_device(config.device).type == "cuda":
            return True
        model = build_meta_model(config.model, config.data, config.dropout)
    except Exception:  # a run that cannot be built here trains alone (and says why then)
        return False
    convolutions = any(isinstance(m, torch.nn.modules.conv._ConvNd) for m in model.modules())
    weights = sum(p.numel() for p in model.parameters())
    return not convolutions and weights <= CPU_GAIN_MAX_WEIGHTS


def train_stack(
    configs: list[RunConfig],
    out_dirs: list[str | Path],
    *,
    resume: bool = False,
    progress: bool = False,
    tags: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Train runs that share a `stack_key` as one stacked model; each member's result, in order.

    Like `dstlab.run.train` for each: with `resume` a member continues from its checkpoint, and
    one already finished returns its stored result. A member whose checkpoint is at another
    position than the others' trains alone, after the stack. A member that fails has a `failed`
    result (with its error) and does not stop the others."""
    if len(configs) != len(out_dirs):
        raise ConfigError("train_stack needs one run directory per configuration.")
    keys = {stack_key(c) for c in configs}
    if None in keys or len(keys) > 1:
        raise ConfigError(
            "runs train stacked only when they share everything but the seed, the mode and the "
            "engine's options, on one process in float32 without dropout or compile, masked."
        )
    results: list[dict[str, Any] | None] = [None] * len(configs)
    members: list[_Member] = []
    started = time.monotonic()
    for i, (config, out) in enumerate(zip(configs, map(Path, out_dirs), strict=True)):
        previous, has_checkpoint = open_run_dir(config, out, resume)
        if previous is not None and previous.get("status") in files.FINAL:
            results[i] = previous
            continue
        start_run_dir(config, out, previous)
        try:
            member = _Member(
                i,
                config,
                out,
                resume=resume and has_checkpoint,
                progress=False,
                device=pick_device(config.device),
                group=distributed.Group(),
                tags=(tags or [{}] * len(configs))[i],
            )
        except Exception as error:
            results[i] = _failed(out, error, None, started)
            continue
        members.append(member)
    together, alone = _by_position(members)
    if together:
        for member, result in zip(together, Stack(together, progress).train(), strict=True):
            results[member.index] = result
    for member in alone:
        member.close()
        extra = {"tags": tags[member.index]} if tags else {}
        results[member.index] = train(member.config, member.out, resume=True, **extra)
    return [r if r is not None else {} for r in results]


def _by_position(members: list[_Member]) -> tuple[list[_Member], list[_Member]]:
    """The members at the most common (epoch, batch, step), and the others."""
    if not members:
        return [], []
    positions = [(m.epoch, m.batch, m.step) for m in members]
    common = max(set(positions), key=positions.count)
    return (
        [m for m, p in zip(members, positions, strict=True) if p == common],
        [m for m, p in zip(members, positions, strict=True) if p != common],
    )


def _failed(out: Path, error: BaseException, run: _Run | None, started: float) -> dict[str, Any]:
    """The `failed` result of a member, written to its directory."""
    result = failure_record(error, run, started)
    files.write_result(out, result)
    return result


class _Member(_Run):
    """One run of a stack: a whole run whose tensors are views of the stack's."""

    def __init__(self, index: int, *args: Any, **kwargs: Any) -> None:
        self.index = index
        super().__init__(*args, **kwargs)

    def _checkpoint_state(self, streams: dict[str, Any], every: list[Any]) -> dict[str, Any]:
        # a view saves its whole storage: the member's slices are copied out first
        return _owned(super()._checkpoint_state(streams, every))


def _owned(value: Any) -> Any:
    """`value` with every tensor that views a larger storage replaced by a copy."""
    if isinstance(value, torch.Tensor):
        whole = value.untyped_storage().nbytes()
        return value.clone() if whole > value.numel() * value.element_size() else value
    if isinstance(value, dict):
        return {k: _owned(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_owned(v) for v in value]
    return value


def _skip_step(closure: Any = None) -> None:
    """A member's optimizer step: the stack's optimizer has already stepped its slice."""
    return None


class Stack:
    """The stacked tensors of the members and the loop that trains them in lockstep."""

    def __init__(self, members: list[_Member], progress: bool = False) -> None:
        self.members = members
        self.active = list(members)
        self.results: dict[int, dict[str, Any]] = {}
        self.progress = progress
        lead = members[0]
        self.module = lead.model
        self.names = [n for n, _ in lead.model.named_parameters()]
        # each member's parameters in `names` order, looked up once: the step binds their grads
        self.member_params = [[m.model.get_parameter(n) for n in self.names] for m in members]
        self.params = {
            n: torch.stack([params[i].detach() for params in self.member_params])
            for i, n in enumerate(self.names)
        }
        for tensor in self.params.values():
            tensor.requires_grad_(True)
        self.buffers = {
            n: torch.stack([m.model.get_buffer(n) for m in members])
            for n, _ in lead.model.named_buffers()
        }
        for k, member in enumerate(members):
            _bind_tensors(member.model, self.params, self.buffers, k)
        self.optimizer = _stacked_optimizer(lead.optimizer, lead.model, self.params)
        self._load_member_states()
        for member in members:
            member.optimizer.step = _skip_step  # type: ignore[method-assign]
        c = lead.config
        self._plain_loss = functools.partial(
            batch_loss, binary=lead.binary, smoothing=c.label_smoothing
        )
        self._loss = torch.func.vmap(self._plain_loss)
        self._forward = StackedForward(self.module)
        self.notice = preemption.PreemptionNotice()
        dirs = [str(m.out) for m in members]
        for member in members:
            member._log({"kind": "stack", "step": member.step, "run_dirs": dirs})

    def _member_losses(
        self, out: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each member's training loss and correct count, each computed as the run alone
        computes it (a batched loss sums in another order: its last bits would differ)."""
        pairs = [self._plain_loss(out[k], y[k]) for k in range(len(self.members))]
        return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])

    # ---- optimizer state: the stack's tensors, the members' views --------------------------
    def _load_member_states(self) -> None:
        """Stack the members' optimizer states (a resume loaded them) into the stack's."""
        lead = self.members[0]
        for i, name in enumerate(self.names):
            first = lead.optimizer.state.get(self.member_params[0][i])
            if not first:
                continue
            stacked: dict[str, Any] = {}
            for key, value in first.items():
                if isinstance(value, torch.Tensor) and value.shape == self.params[name].shape[1:]:
                    values = [
                        m.optimizer.state[params[i]][key]
                        for m, params in zip(self.members, self.member_params, strict=True)
                    ]
                    stacked[key] = torch.stack(values)
                else:  # a per-tensor value (Adam's step count): the same for every member
                    stacked[key] = value.clone() if isinstance(value, torch.Tensor) else value
            self.optimizer.state[self.params[name]] = stacked
        self._bind_states()

    def _bind_states(self) -> None:
        """Each member's optimizer state becomes views of its slice of the stack's."""
        for k, member in enumerate(self.members):
            for name, param in zip(self.names, self.member_params[k], strict=True):
                state = self.optimizer.state.get(self.params[name])
                if not state:
                    continue
                member.optimizer.state[param] = {
                    key: value[k]
                    if isinstance(value, torch.Tensor) and value.dim() == self.params[name].dim()
                    else value
                    for key, value in state.items()
                }
        self._bound = all(self.optimizer.state.get(p) for p in self.params.values())

    # ---- the loop ------------------------------------------------------------------------
    @property
    def lead(self) -> _Member:
        """A member still training: every active member is at the stack's position."""
        return self.active[0]

    def train(self) -> list[dict[str, Any]]:
        lead = self.lead
        bar = tqdm(
            total=lead.total_steps,
            initial=lead.step,
            disable=not self.progress,
            desc=f"stack of {len(self.members)}",
            unit="step",
            leave=False,
        )
        try:
            with self.notice:
                while self.active and self.lead.epoch < lead.config.epochs:
                    self._train_epoch(bar)
                    if self.active:
                        self._end_epoch(bar)
            self._finish_all()
        finally:
            bar.close()
            for member in self.members:
                member.close()
        return [self.results[m.index] for m in self.members]

    def _train_epoch(self, bar: Any) -> None:
        # a member that ended still fills its slice (with its own samples, at the stack's place)
        orders = [m._order(self.lead.epoch) for m in self.members]
        self.module.train()
        while self.active and self.lead.batch < self.lead.batches:
            lead = self.lead
            lr = lr_at(lead.step, lead.batches, lead.config)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            batches = [
                m._batch(m.ds.train, m._micro_batches(orders[k], lead.batch)[0], train=True)
                for k, m in enumerate(self.members)
            ]
            x = torch.stack([b[0] for b in batches])
            y = torch.stack([b[1] for b in batches])
            for p in self.params.values():
                p.grad = None
            losses, correct = self._member_losses(self._forward(self.params, self.buffers, x), y)
            values = torch.stack((losses.detach().float(), correct.float())).tolist()
            due = lead._checkpoint_due() or self.notice.pending
            live = [k for k, m in enumerate(self.members) if m in self.active]
            for k in list(live):
                if not math.isfinite(values[0][k]):
                    self._end(self.members[k], diverged=lead.step + 1)
                    live.remove(k)
            if not live:
                return
            losses[live].sum().backward()
            self._step(live, lr, values, len(batches[0][1]))
            bar.update(1)
            if self.active and (due or self.notice.pending) and self.lead.batch < lead.batches:
                self._checkpoint()

    def _step(self, live: list[int], lr: float, values: list[list[float]], samples: int) -> None:
        """Masked gradients, one optimizer step of the stack, each member's engine after it."""
        prepared = []
        for k in live:
            member = self.members[k]
            for name, param in zip(self.names, self.member_params[k], strict=True):
                param.grad = self.params[name].grad[k]
            for group in member.optimizer.param_groups:
                group["lr"] = lr
            try:
                if member.dst is not None:
                    member.dst.before_optimizer_step()
                prepared.append(k)
            except Exception as error:
                self._fail_or_diverge(member, error)
        self.optimizer.step()
        if not self._bound:
            self._bind_states()
        for k in prepared:
            member = self.members[k]
            try:
                record = member._optimizer_step()
            except Exception as error:
                self._fail_or_diverge(member, error)
                continue
            member.step += 1
            member.batch += 1
            member.sums[0] += values[0][k] * samples
            member.sums[1] += int(values[1][k])
            member.sums[2] += samples
            if record:
                member._log({"kind": "update", "epoch": member.epoch + 1, **record})

    def _fail_or_diverge(self, member: _Member, error: Exception) -> None:
        if isinstance(error, NonFiniteScoreError):
            self._end(member, diverged=member.step + 1)
        else:
            self._end(member, error=error)

    def _checkpoint(self) -> None:
        """Every member saves; a USR2 that asked for it is noted in each, then handed on."""
        signalled = self.notice.pending
        for member in self.active:
            if signalled:
                member._log(
                    {"kind": "signal", "signal": preemption.SIGNAL_NAME, "step": member.step}
                )
            member._save()
        if signalled:
            self.notice.pass_on()

    # ---- evaluation --------------------------------------------------------------------------
    @torch.no_grad()
    def _accuracies(self, split: str) -> list[float | None]:
        """Each member's accuracy on its own `split` (its seed draws its validation set)."""
        splits = [getattr(m.ds, split) for m in self.members]
        n = len(splits[0]) if splits[0] is not None else 0
        if n == 0:
            return [None] * len(self.members)
        self.module.eval()
        correct = torch.zeros(len(self.members), dtype=torch.long)
        for start in range(0, n, EVAL_BATCH):
            idx = torch.arange(start, min(n, start + EVAL_BATCH))
            batches = [
                m._batch(s, idx, train=False) for m, s in zip(self.members, splits, strict=True)
            ]
            x = torch.stack([b[0] for b in batches])
            y = torch.stack([b[1] for b in batches])
            correct += self._loss(self._forward(self.params, self.buffers, x), y)[1].cpu()
        self.module.train()
        return [c / n for c in correct.tolist()]

    def _end_epoch(self, bar: Any) -> None:
        accuracies = self._accuracies("val")
        for k, member in enumerate(self.members):
            if member in self.active:
                member._end_epoch(bar, accuracies[k])

    def _finish_all(self) -> None:
        if not self.active:
            return
        final = self._accuracies("test")
        finals = [_clone_state(m.model) for m in self.members]
        for member in self.members:
            if member.best["state"] is not None:
                member.model.load_state_dict(member.best["state"])
        best = self._accuracies("test")
        for member, state in zip(self.members, finals, strict=True):
            member.model.load_state_dict(state)
        for member in list(self.active):
            k = self.members.index(member)
            kept = best[k] if member.best["state"] is not None else final[k]
            try:
                self.results[member.index] = member._finish(None, (final[k], kept))
            except Exception as error:
                self.results[member.index] = _failed(member.out, error, member, 0.0)
        self.active = []

    def _end(
        self, member: _Member, *, diverged: int | None = None, error: Exception | None = None
    ) -> None:
        """A member leaves the stack: diverged or failed; its slices go on unread."""
        self.active.remove(member)
        if error is not None:
            self.results[member.index] = _failed(member.out, error, member, 0.0)
        else:
            # its best-validation weights are tested as a run alone tests them
            accuracies = member._test_accuracies(diverged)
            self.results[member.index] = member._finish(diverged, accuracies)


def _bind_tensors(
    model: torch.nn.Module,
    params: dict[str, torch.Tensor],
    buffers: dict[str, torch.Tensor],
    k: int,
) -> None:
    """The model's parameters and buffers become views of slice `k` of the stacked ones, so
    what its engine writes in place (masks, regrown weights) is what the stack trains."""
    for name, tensor in params.items():
        model.get_parameter(name).data = tensor.detach()[k]
    for name, tensor in buffers.items():
        owner, _, leaf = name.rpartition(".")
        module = model.get_submodule(owner) if owner else model
        module._buffers[leaf] = tensor[k]


def _stacked_optimizer(
    like: torch.optim.Optimizer, model: torch.nn.Module, params: dict[str, torch.Tensor]
) -> torch.optim.Optimizer:
    """An optimizer of `like`'s type and hyperparameters over the stacked tensors, group by
    group (`model`'s parameters, which `like` steps, map to the stacked ones by name)."""
    index = {id(p): n for n, p in model.named_parameters()}
    groups = []
    for group in like.param_groups:
        stacked = {k: v for k, v in group.items() if k != "params"}
        stacked["params"] = [params[index[id(p)]] for p in group["params"]]
        groups.append(stacked)
    # every hyperparameter travels in the groups (the constructor's own may not take them all)
    return type(like)(groups, lr=like.defaults["lr"])
