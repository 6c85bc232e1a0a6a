"""One training run end to end: data → model → optimizer (wrapped by the DST engine unless dense)
→ per-epoch metrics, checkpoints that resume bit-exactly, and a result.json.

All randomness comes from generators seeded by `config.seed`: model init (the global generator,
seeded right before the model is built; dropout continues from it), the data order (one
generator per epoch, seeded from (seed, epoch)), augmentation, and the engine's own generator.
Their states travel in the checkpoint, so a resumed run replays exactly what an uninterrupted one
would have done.

Scale (`dstlab.run.distributed`): under torchrun or `--nproc N` each rank trains on its slice of
every global batch through DDP, evaluates its shard of each split, and rank 0 alone writes files;
`precision` autocasts the forward pass (fp16 with a gradient scaler), `accumulate` sums K
micro-batches into one optimizer step, and `compile` trains through torch.compile. The engine,
the checkpoint and evaluation always see the plain model, so checkpoints do not depend on how
many processes wrote them."""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from dstlab.errors import ConfigError, DataError, DstlabError
from dstlab.run import distributed, files, preemption, start_similarity
from dstlab.run.config import DST_OPTIONS, RunConfig
from dstlab.run.distributed import Group
from dstlab.run.losses import batch_loss
from dstlab.run.optim import lr_at, make_optimizer
from dstlab.topology.criteria import NonFiniteScoreError

EVAL_BATCH = 1024
_AUG_SEED_OFFSET = 0x5EED  # the augmentation stream differs from the model-init stream
_RANK_SEED_STEP = 1_000_003  # ranks > 0 draw dropout and augmentation from their own streams
_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


def train(
    config: RunConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    tags: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train one run into `out_dir` and return its result (also written to result.json).

    With `resume`, continue from the directory's checkpoint (starting fresh when there is none);
    a run that already finished returns its stored result. A non-finite loss ends the run as
    `diverged`; any other exception writes a `failed` result.json and is re-raised. `tags`
    (e.g. a study's name and grid point) go to the trackers of `config.log`."""
    out = Path(out_dir)
    device = _rank_device(config.device)  # a device this host lacks: refused before any folder
    previous, has_checkpoint = open_run_dir(config, out, resume)
    if previous is not None and previous.get("status") in files.FINAL:
        return previous
    group = distributed.join(device)
    started = time.monotonic()
    run: _Run | None = None
    clean = False  # the run returned (done or diverged): the ranks part after a barrier
    try:
        config = config.replace(nproc=distributed.check_world(config.nproc, group))
        if group.main:
            start_run_dir(config, out, previous)
        run = _Run(
            config,
            out,
            resume=resume and has_checkpoint,
            progress=progress,
            device=device,
            group=group,
            tags=tags,
        )
        result = run.execute()
        clean = True
        return result
    except Exception as error:
        prefix = f"rank {group.rank}: " if group.size > 1 else ""
        result = failure_record(error, run, started, prefix)
        # first failure wins: a rank's own error, not its peers' lost connection to it
        if group.size == 1 or not (out / files.RESULT).exists():
            files.write_result(out, result)
        raise
    finally:
        if run is not None:
            run.close()
        if group.owned:
            if clean and run is not None:
                run.net = run.model  # the DDP wrapper holds the group; `leave` must free it
            distributed.leave(clean)


def failure_record(
    error: BaseException, run: _Run | None, started: float, prefix: str = ""
) -> dict[str, Any]:
    """The `failed` result of a run that raised `error` (a DstlabError's one sentence, else
    the exception's type and text), with how far it came."""
    text = str(error) if isinstance(error, DstlabError) else f"{type(error).__name__}: {error}"
    return files.result_record(
        files.FAILED,
        error=prefix + text,
        steps=run.step if run else 0,
        epochs=run.epoch if run else 0,
        seconds=run.seconds() if run else time.monotonic() - started,
    )


def open_run_dir(config: RunConfig, out: Path, resume: bool) -> tuple[dict[str, Any] | None, bool]:
    """(the directory's stored result, whether it holds a checkpoint), after refusing a run
    directory that holds another run; a stored result in ``files.FINAL`` means nothing to do."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"cannot create the run directory {out} ({error.strerror}).") from None
    previous = files.read_result(out)
    has_checkpoint = (out / files.CHECKPOINT).exists()
    if not resume and (has_checkpoint or (previous or {}).get("status") in files.FINAL):
        raise ConfigError(
            f"{out} already holds a run; continue it with --resume {out} or choose another --out."
        )
    if resume:
        _check_same_run(out, config)
    return previous, has_checkpoint


def start_run_dir(config: RunConfig, out: Path, previous: dict[str, Any] | None) -> None:
    """The directory's files before training: the config, no leftover of an earlier attempt."""
    files.remove_temporaries(out)  # of a write that a kill interrupted
    files.write_yaml(out / files.CONFIG, config.to_dict())
    # a failed result of an earlier attempt no longer describes this one
    if previous is not None and (out / files.RESULT).exists():
        (out / files.RESULT).unlink()


def _rank_device(name: str) -> torch.device:
    """The device of this process: under a launcher, CUDA ranks take the GPU of their local rank."""
    device = pick_device(name)
    if device.type == "cuda" and distributed.launched():
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    return device


def pick_device(name: str) -> torch.device:
    """`auto` takes cuda, then mps, then cpu; an explicit device must exist."""
    mps = getattr(torch.backends, "mps", None)
    has_mps = mps is not None and mps.is_available()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if has_mps else "cpu")
    if (name == "cuda" and not torch.cuda.is_available()) or (name == "mps" and not has_mps):
        raise ConfigError(f"device '{name}' is not available here; use --device auto or cpu.")
    return torch.device(name)


def _check_same_run(out: Path, config: RunConfig) -> None:
    """A resume must use the configuration the directory was started with."""
    stored = out / files.CONFIG
    if not stored.exists():
        return
    from dstlab.run.config_file import read_config_file

    before = RunConfig.from_dict(read_config_file(stored)).identity()
    now = config.identity()
    changed = [k for k in now if now[k] != before.get(k)]
    if changed:
        key = changed[0]
        raise ConfigError(
            f"cannot resume {out} with {key}={now[key]!r}: it was started with "
            f"{key}={before.get(key)!r} (see {stored})."
        )


def _clone_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _no_sync(net: torch.nn.Module) -> Any:
    """DDP's no_sync() (no gradient all-reduce for a micro-batch that is not the step's last)."""
    inner = getattr(net, "_orig_mod", net)  # under torch.compile
    return inner.no_sync() if hasattr(inner, "no_sync") else contextlib.nullcontext()


def _get_rng(device: torch.device) -> dict[str, Any]:
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    elif device.type == "mps":
        state["mps"] = torch.mps.get_rng_state()
    return state


def _set_rng(device: torch.device, state: dict[str, Any]) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
    elif device.type == "mps" and "mps" in state:
        torch.mps.set_rng_state(state["mps"])


class _Run:
    """The state of one run between steps: everything a checkpoint must hold."""

    def __init__(
        self,
        config: RunConfig,
        out: Path,
        *,
        resume: bool,
        progress: bool,
        tags: dict[str, Any] | None = None,
        device: torch.device,
        group: Group,
    ) -> None:
        from dstlab.data import load_dataset
        from dstlab.models import create_model

        c = self.config = config
        self.out = out
        self.group = group
        self.progress = progress and group.main and sys.stderr.isatty()
        self.session_start = time.monotonic()
        self.seconds_before = 0.0
        self.step = self.epoch = self.batch = 0
        self.metrics: files.MetricsLog | None = None
        self.trackers: Any = None
        self.notice = preemption.PreemptionNotice()
        if c.threads:
            torch.set_num_threads(c.threads)
        self.device = device

        self.ds = load_dataset(
            c.data, data_dir=c.data_dir, val_fraction=c.val_fraction, seed=c.seed, augment=c.augment
        )
        n = len(self.ds.train)
        if n == 0:
            raise DataError(f"dataset '{c.data}' has no training samples.")
        # a final micro-batch that leaves a process a single sample (or none) would break batch
        # norm; it is skipped instead
        tail = n % c.global_batch
        self.used = n - tail if 0 < tail < 2 * group.size and n > tail else n
        self.per_step = c.global_batch * c.accumulate  # samples of one optimizer step
        self.batches = -(-self.used // self.per_step)  # optimizer steps per epoch
        self.total_steps = c.epochs * self.batches
        self.binary = self.ds.num_classes == 1

        torch.manual_seed(c.seed)
        self.model = create_model(
            c.model,
            input_shape=self.ds.input_shape,
            num_classes=self.ds.num_classes,
            dropout=c.dropout,
        ).to(self.device)
        if group.rank > 0:
            torch.manual_seed(c.seed + _RANK_SEED_STEP * group.rank)
        self.net = self._wrap(self.model)
        self.optimizer = make_optimizer(self.model, c)
        self.scaler = torch.amp.GradScaler(self.device.type) if c.precision == "fp16" else None
        self.dst = self._make_dst()
        # augmentation draws on the batch's device, so batches travel there as compact uint8
        aug_seed = c.seed + _AUG_SEED_OFFSET + _RANK_SEED_STEP * group.rank
        self.aug_gen = torch.Generator(device=self.device).manual_seed(aug_seed)

        self.sums = [0.0, 0, 0]  # this epoch so far: loss × samples, correct, samples
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] = {"val_acc": None, "epoch": None, "state": None}
        metrics_bytes = 0
        if resume:
            metrics_bytes = self._restore(files.load_checkpoint(out / files.CHECKPOINT))
        if group.main:
            self.metrics = files.MetricsLog(out / files.METRICS, keep_bytes=metrics_bytes)
        if c.log and group.main:
            from dstlab.integrations.trackers import Trackers

            self.trackers = Trackers(c.log, out, c.to_dict(), tags or {})
        self.last_save = time.monotonic()
        if not resume and c.start_similarity:
            self._start_similarity()

    # ---- set-up -------------------------------------------------------------------------
    def _wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """What training forwards through: DDP over the processes, then torch.compile. The
        parameters stay the model's own, so the engine and the checkpoint use the plain names."""
        net = model
        if self.group.size > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            net = DistributedDataParallel(model, device_ids=ids)
        if self.config.compile:
            net = torch.compile(net)
        return net

    def _make_dst(self) -> Any:
        c = self.config
        if c.mode == "dense":
            return None
        from dstlab import DST

        options = {k: getattr(c, k) for k in DST_OPTIONS}
        options = {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()}
        return DST(
            self.model,
            self.optimizer,
            **options,
            total_steps=self.total_steps,
            seed=c.seed,
            static=c.mode == "static",
            grad_scaler=self.scaler,
        )

    def _order(self, epoch: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.config.seed * 1_000_003 + epoch)
        return torch.randperm(len(self.ds.train), generator=gen)

    def _micro_batches(self, order: torch.Tensor, step_in_epoch: int) -> list[torch.Tensor]:
        """This process's micro-batches of one optimizer step: the step takes the next
        `accumulate` global micro-batches of the epoch's order, and each process takes every
        size-th sample of each (DistributedSampler's split), so all processes together see
        exactly the samples one process would."""
        start = step_in_epoch * self.per_step
        chunk = order[start : min(start + self.per_step, self.used)]
        size, width = self.group.size, self.config.global_batch
        return [chunk[i : i + width][self.group.rank :: size] for i in range(0, len(chunk), width)]

    def seconds(self) -> float:
        return self.seconds_before + time.monotonic() - self.session_start

    # ---- one step, one epoch -------------------------------------------------------------
    def _autocast(self) -> Any:
        dtype = _AUTOCAST.get(self.config.precision)
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def _loss(
        self, out: torch.Tensor, y: torch.Tensor, reduction: str = "mean"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean or summed loss, number of correct predictions) of one batch."""
        return batch_loss(
            out, y, binary=self.binary, smoothing=self.config.label_smoothing, reduction=reduction
        )

    def _batch(self, split: Any, idx: torch.Tensor, train: bool) -> tuple[torch.Tensor, ...]:
        x, y = split.take(idx)
        x = x.to(self.device, non_blocking=True)
        x = self.ds.prepare(x, train=train, generator=self.aug_gen if train else None)
        return x, y.to(self.device, non_blocking=True)

    def _train_epoch(self, bar: Any) -> int | None:
        """Train from the current batch to the end of the epoch; the step number of a
        non-finite loss, or None."""
        c = self.config
        order = self._order(self.epoch)
        self.net.train()
        # one process, one micro-batch: the batch's mean loss, as always; otherwise each
        # micro-batch's summed loss over the step's sample count, which DDP's averaging and the
        # accumulation turn into the step's mean
        plain = c.accumulate == 1 and self.group.size == 1
        while self.batch < self.batches:
            micro = self._micro_batches(order, self.batch)
            step_samples = sum(self._global_len(i) for i in range(len(micro)))
            for group in self.optimizer.param_groups:
                group["lr"] = lr_at(self.step, self.batches, c)
            self.optimizer.zero_grad(set_to_none=True)
            step_loss, step_correct, save = 0.0, 0, False
            for i, idx in enumerate(micro):
                x, y = self._batch(self.ds.train, idx, train=True)
                last = i == len(micro) - 1
                sync = contextlib.nullcontext() if last else _no_sync(self.net)
                with sync:
                    with self._autocast():
                        loss, correct = self._loss(self.net(x), y, "mean" if plain else "sum")
                    # one device sync per micro-batch serves both the divergence check and the
                    # metrics (float32: exact for the loss and for counts up to 2**24, and MPS
                    # has no float64); several processes add theirs up in the same call
                    # a USR2 on any process makes every one save (the save gathers streams)
                    due = last and (
                        (self.group.main and self._checkpoint_due()) or self.notice.pending
                    )
                    values = torch.stack((loss.detach().float(), correct.float())).tolist()
                    if plain:
                        values[0] *= len(idx)
                    values = distributed.sum_all([*values, float(due)], self.device, self.group)
                    if not math.isfinite(values[0]):
                        return self.step + 1
                    step_loss += values[0]
                    step_correct += int(values[1])
                    save = values[2] > 0
                    if not plain:
                        loss = loss * (self.group.size / step_samples)
                    (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
            try:
                record = self._optimizer_step()
            except NonFiniteScoreError:  # NaN/inf weights or gradients met at an update
                return self.step + 1
            self.step += 1
            self.batch += 1
            if self.group.size == 1:  # no peers to agree with: a USR2 during this step saves now
                save = save or self.notice.pending
            self.sums[0] += step_loss
            self.sums[1] += step_correct
            self.sums[2] += step_samples
            if record:
                self._log({"kind": "update", "epoch": self.epoch + 1, **record})
            bar.update(1)
            if self.batch % 10 == 0:
                self._show(
                    bar, self.epoch + 1, self.sums[0] / self.sums[2], self.sums[1] / self.sums[2]
                )
            if save and self.batch < self.batches:  # the epoch end saves anyway
                self._checkpoint()
        return None

    def _global_len(self, i: int) -> int:
        """Samples in micro-batch `i` of the current step over all processes."""
        start = self.batch * self.per_step + i * self.config.global_batch
        return max(0, min(self.config.global_batch, self.used - start))

    def _checkpoint_due(self) -> bool:
        return time.monotonic() - self.last_save >= self.config.checkpoint_seconds

    def _optimizer_step(self) -> dict[str, Any] | None:
        if self.dst is not None:
            return self.dst.step()
        if self.scaler is None:
            self.optimizer.step()
        else:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        return None

    def _log(self, record: dict[str, Any]) -> None:
        """One record to metrics.jsonl and to the trackers of `--log` (rank 0 only)."""
        if self.metrics is not None:
            self.metrics.write(record)
        if self.trackers is not None:
            self.trackers.log(record)

    def _end_epoch(self, bar: Any, val_acc: float | None) -> None:
        loss_sum, correct, count = self.sums
        record = {
            "kind": "epoch",
            "epoch": self.epoch + 1,
            "step": self.step,
            "train_loss": loss_sum / count,
            "train_acc": correct / count,
            "val_acc": val_acc,
            "lr": lr_at(self.step - 1, self.batches, self.config),
            "density": self.density(),
            "seconds": round(self.seconds(), 3),
        }
        self._log(record)
        self.history.append(record)
        if val_acc is not None and (self.best["val_acc"] is None or val_acc > self.best["val_acc"]):
            self.best = {
                "val_acc": val_acc,
                "epoch": self.epoch + 1,
                "state": _clone_state(self.model),
            }
        self.epoch += 1
        self.batch = 0
        self.sums = [0.0, 0, 0]
        self._show(bar, self.epoch, record["train_loss"], record["train_acc"])
        self._checkpoint()

    def _show(self, bar: Any, epoch: int, loss: float, acc: float) -> None:
        """Progress-bar fields: this epoch's running train loss/accuracy, last validation acc."""
        val = self.history[-1]["val_acc"] if self.history else None
        bar.set_postfix(
            epoch=f"{epoch}/{self.config.epochs}",
            loss=f"{loss:.4f}",
            acc=f"{acc:.3f}",
            val="-" if val is None else f"{val:.3f}",
            refresh=False,
        )

    # ---- the whole run --------------------------------------------------------------------
    def execute(self) -> dict[str, Any]:
        c = self.config
        bar = tqdm(
            total=self.total_steps,
            initial=self.step,
            disable=not self.progress,
            file=sys.stderr,
            desc=f"{c.mode} {c.model}/{c.data}",
            unit="step",
            dynamic_ncols=True,
            leave=False,
        )
        diverged_step = None
        try:
            with self.notice:  # USR2 saves at once while the run trains (run/preemption.py)
                while self.epoch < c.epochs and diverged_step is None:
                    diverged_step = self._train_epoch(bar)
                    if diverged_step is None:
                        self._end_epoch(bar, self.accuracy(self.ds.val))
        finally:
            bar.close()
        return self._finish(diverged_step, self._test_accuracies(diverged_step))

    def _test_accuracies(self, diverged_step: int | None) -> tuple[float | None, float | None]:
        """Test accuracy of the final weights and of the best-validation ones."""
        test_acc = None if diverged_step else self.accuracy(self.ds.test)
        test_best = test_acc
        if self.best["state"] is not None:
            final_state = _clone_state(self.model)
            self.model.load_state_dict(self.best["state"])
            test_best = self.accuracy(self.ds.test)
            self.model.load_state_dict(final_state)
        return test_acc, test_best

    def _finish(
        self, diverged_step: int | None, accuracies: tuple[float | None, float | None]
    ) -> dict[str, Any]:
        test_acc, test_best = accuracies
        result = files.result_record(
            files.DIVERGED if diverged_step else files.DONE,
            test_acc=test_acc,
            best_val_acc=self.best["val_acc"],
            test_acc_best_val=test_best,
            best_val_epoch=self.best["epoch"],
            final_density=self.density(),
            epochs=self.epoch,
            steps=self.step,
            total_steps=self.total_steps,
            seconds=round(self.seconds(), 3),
            final_train_loss=self.history[-1]["train_loss"] if self.history else None,
            diverged_step=diverged_step,
            device=str(self.device),
        )
        if not diverged_step:
            self._save()
        if self.group.main:
            files.write_result(self.out, result)
        return result

    # ---- measurements -----------------------------------------------------------------------
    @torch.no_grad()
    def accuracy(self, split: Any) -> float | None:
        """Accuracy of the current model on a whole split (None for an empty split); each
        process counts its own shard of it, so every sample is counted once."""
        n = len(split) if split is not None else 0
        if n == 0:
            return None
        was_training = self.model.training
        self.model.eval()
        correct = 0
        shard = torch.arange(self.group.rank, n, self.group.size)
        for start in range(0, len(shard), EVAL_BATCH):
            x, y = self._batch(split, shard[start : start + EVAL_BATCH], train=False)
            with self._autocast():
                correct += int(self._loss(self.model(x), y)[1])
        self.model.train(was_training)
        correct = int(distributed.sum_all([float(correct)], self.device, self.group)[0])
        return correct / n

    def density(self) -> float:
        """Active fraction of the sparse parameters (1.0 for a dense run)."""
        return 1.0 if self.dst is None else self.dst.sparse_density()

    def _start_similarity(self) -> None:
        """DESIGN §7 "at the start" on the first batch of the first epoch's order; the run itself
        is left untouched."""
        c = self.config
        criteria = list(c.shadow_criteria)
        if not criteria:
            from dstlab.topology.criteria import list_pruners

            criteria = list(list_pruners())
        criteria = list(dict.fromkeys([c.prune, *criteria]))
        rng, state = _get_rng(self.device), _clone_state(self.model)
        x, y = self._batch(self.ds.train, self._order(0)[: c.batch_size], train=False)
        measured = start_similarity.measure(
            self.dst, lambda: self._loss(self.model(x), y)[0], criteria, c.start_similarity
        )
        for fraction, similarity in measured.items():
            layers = similarity.pop("layers")
            self._log(
                {
                    "kind": "start_similarity",
                    "fraction": fraction,
                    "similarity": similarity,
                    "layers": layers,
                }
            )
        self.model.load_state_dict(state)  # batch-norm statistics of that forward pass
        _set_rng(self.device, rng)  # dropout of that forward pass

    # ---- checkpoints ------------------------------------------------------------------------
    def _checkpoint(self) -> None:
        """Save while training. A USR2 that asked for this save is noted in the metrics first
        (so the resumed run keeps the note), then handed on (submitit requeues the job)."""
        signalled = self.notice.pending
        if signalled:
            signal = preemption.SIGNAL_NAME
            self._log({"kind": "signal", "signal": signal, "step": self.step})
        self._save()
        if signalled:
            self.notice.pass_on()

    def _save(self) -> None:
        """Rank 0 writes the checkpoint; it holds every rank's random streams."""
        streams = {"global": _get_rng(self.device), "augment": self.aug_gen.get_state()}
        every = distributed.gather_objects(streams, self.group)
        if not self.group.main:
            self.last_save = time.monotonic()
            return
        files.save_checkpoint(self.out / files.CHECKPOINT, self._checkpoint_state(streams, every))
        self.last_save = time.monotonic()

    def _checkpoint_state(self, streams: dict[str, Any], every: list[Any]) -> dict[str, Any]:
        return {
            "version": 1,
            "config": self.config.to_dict(),
            "position": {"epoch": self.epoch, "batch": self.batch, "step": self.step},
            "sums": list(self.sums),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "dst": self.dst.state_dict() if self.dst is not None else None,
            "rng": streams,
            "rng_ranks": every,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "best": self.best,
            "history": self.history,
            "metrics_bytes": self.metrics.sync(),
            "seconds": self.seconds(),
        }

    def _restore(self, ckpt: dict[str, Any]) -> int:
        """Load a checkpoint; returns how many bytes of metrics.jsonl it knows."""
        if RunConfig.from_dict(ckpt["config"]).identity() != self.config.identity():
            raise ConfigError(
                f"the checkpoint in {self.out} belongs to another configuration; "
                "start a new run with another --out."
            )
        position = ckpt["position"]
        self.epoch, self.batch, self.step = position["epoch"], position["batch"], position["step"]
        self.sums = list(ckpt["sums"])
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.dst is not None:
            self.dst.load_state_dict(ckpt["dst"])
        # a checkpoint from as many processes resumes each rank's own streams exactly
        ranks = ckpt["rng_ranks"]
        streams = ranks[self.group.rank] if len(ranks) == self.group.size else ckpt["rng"]
        _set_rng(self.device, streams["global"])
        self.aug_gen.set_state(streams["augment"])
        if self.scaler is not None and ckpt["scaler"]:  # a disabled scaler saves {}
            self.scaler.load_state_dict(ckpt["scaler"])
        self.best = ckpt["best"]
        if self.best["state"] is not None:
            self.best["state"] = {k: v.to(self.device) for k, v in self.best["state"].items()}
        self.history = ckpt["history"]
        self.seconds_before = ckpt["seconds"]
        return ckpt["metrics_bytes"]

    def close(self) -> None:
        if self.metrics is not None:
            self.metrics.close()
        if self.trackers is not None:
            self.trackers.close()
