"""Loaded at start-up by every process of a test's data-parallel job (this folder is put on
PYTHONPATH): rank 1 misbehaves as $DSTLAB_TEST_FAULT asks, and with $DSTLAB_TEST_THREADS set
every rank writes the threads it runs to that folder, when it destroys its process group and
when the interpreter begins to shut down. Test-only; the library has no hook."""

import os

_FAULT = os.environ.get("DSTLAB_TEST_FAULT")
_THREADS = os.environ.get("DSTLAB_TEST_THREADS")


def _record_threads(moment: str) -> None:
    """This process's native thread names (Linux), one per line, to <folder>/<moment>-<rank>."""
    names = []
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/comm") as comm:
                names.append(comm.read().strip())
        except OSError:  # the thread ended meanwhile
            pass
    with open(os.path.join(_THREADS, f"{moment}-{os.environ['RANK']}"), "w") as out:
        out.write("\n".join(sorted(names)))


if _THREADS and "RANK" in os.environ:
    import atexit

    import torch.distributed as dist

    # registered first, so it runs last: after every other exit handler, right before the
    # interpreter starts to tear itself down
    atexit.register(_record_threads, "exit")
    original_destroy = dist.destroy_process_group

    def recording_destroy(*args, **kwargs):
        _record_threads("destroy")
        return original_destroy(*args, **kwargs)

    dist.destroy_process_group = recording_destroy

if _FAULT and os.environ.get("RANK") == "1":
    from dstlab.run import loop
    from dstlab.topology import masks

    if _FAULT == "crash":
        original_step = loop._Run._optimizer_step

        def crashing_step(self):
            if self.step == 3:
                raise RuntimeError("injected fault on rank 1")
            return original_step(self)

        loop._Run._optimizer_step = crashing_step
    elif _FAULT == "masks":
        original_apply = masks.MaskedTarget.apply_positions

        def diverging_apply(self, active, removed, grown, optimizer):
            new = original_apply(self, active, removed, grown, optimizer)
            if self.name == "fc2.weight":  # rank 1 swaps one active weight for an inactive one
                flat = self.mask.clone().view(-1)
                on, off = new[0], (~flat).nonzero()[0]
                flat[on], flat[off] = False, True
                self.mask = flat.view(self.shape)
                new = flat.nonzero().squeeze(1)
            return new

        masks.MaskedTarget.apply_positions = diverging_apply
