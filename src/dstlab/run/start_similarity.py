"""The "mask similarity at the start" experiment (DESIGN §7): what each pruning criterion would
remove from the initial sparse network, judged on one batch's gradient (no training step), at
constant fractions.

One measurement, two callers: a run with the ``start_similarity`` option records it before its
first step (``dstlab.run.loop``), and ``dstlab similarity`` runs it alone on a freshly built
model (:func:`start_similarity`). Each fraction gives the engine's similarity dict (criteria,
pooled and per-layer Jaccard) and each layer's candidates and removal size, the numbers the
random-removal baseline of the report needs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from dstlab.errors import ConfigError
from dstlab.run.losses import batch_loss

DEFAULT_FRACTIONS = (0.5, 0.25, 0.125, 0.0625)


def measure(
    dst: Any,
    loss_of: Callable[[], torch.Tensor],
    criteria: Sequence[str],
    fractions: Sequence[float],
) -> dict[float, dict[str, Any]]:
    """Back-propagate ``loss_of()`` (one batch's loss on the model ``dst`` wraps) and compare
    ``criteria`` at each fraction: {fraction: the engine's similarity dict plus ``layers``,
    {name: {"active": N, "removed": a}}}. The gradients are cleared again; restoring anything
    else the forward pass touched (batch-norm statistics, random streams) is the caller's."""
    from dstlab.topology.schedules import count_to_replace

    dst.optimizer.zero_grad(set_to_none=True)
    dst.model.train()
    loss_of().backward()
    out = {}
    for fraction in fractions:
        similarity = dst.compare_criteria(list(criteria), fraction=float(fraction))
        similarity["layers"] = {
            name: {"active": active, "removed": count_to_replace(float(fraction), active)}
            for name, active in dst.layer_counts().items()
        }
        out[float(fraction)] = similarity
    dst.optimizer.zero_grad(set_to_none=True)
    return out


def start_similarity(
    model: str,
    data: str,
    density: float = 0.2,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    criteria: Sequence[str] | None = None,
    *,
    seed: int = 0,
    batch_size: int = 128,
    distribution: str = "erk",
    data_dir: str | None = None,
) -> dict[float, dict]:
    """Build ``model`` for ``data``, draw the initial sparse topology at ``density`` and
    :func:`measure` on one batch of the training split: {fraction: similarity dict with
    ``layers`` and the engine's ``selection``}. ``criteria`` defaults to every pruner."""
    from dstlab import DST
    from dstlab.data import load_dataset
    from dstlab.models import create_model
    from dstlab.registry import check_one_of
    from dstlab.topology.checks import check_number
    from dstlab.topology.criteria import list_pruners
    from dstlab.topology.distributions import check_density
    from dstlab.topology.validation import check_compared_fraction, check_seed

    known = list_pruners()
    criteria = list(dict.fromkeys(criteria or known))
    for name in criteria:
        check_one_of("each of criteria", name, known)
    if len(criteria) < 2:
        raise ConfigError(f"give at least two criteria to compare, got {criteria}.")
    if not fractions:
        raise ConfigError("give at least one fraction to compare the criteria at.")
    for fraction in fractions:
        check_compared_fraction("each of fractions", fraction)
    check_density(density)
    check_number("batch_size", batch_size, 1, whole=True)
    check_seed(seed)

    torch.manual_seed(seed)
    ds = load_dataset(data, data_dir=data_dir, seed=seed, augment=False)
    net = create_model(model, input_shape=ds.input_shape, num_classes=ds.num_classes)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01)
    dst = DST(
        net,
        optimizer,
        density=density,
        prune=criteria[0],
        distribution=distribution,
        total_steps=1,
        seed=seed,
    )
    gen = torch.Generator().manual_seed(seed)
    x, y = ds.train.take(torch.randperm(len(ds.train), generator=gen)[:batch_size])
    x = ds.prepare(x, train=False)

    def loss_of() -> torch.Tensor:
        return batch_loss(net(x), y, binary=ds.num_classes == 1)[0]

    result = measure(dst, loss_of, criteria, fractions)
    for similarity in result.values():
        similarity["selection"] = dst.selection
    return result
