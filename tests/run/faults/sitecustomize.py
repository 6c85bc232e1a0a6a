"""Loaded at start-up by every process of a test's data-parallel job (this folder is put on
PYTHONPATH): rank 1 misbehaves as $DSTLAB_TEST_FAULT asks. Test-only; the library has no hook."""

import os

_FAULT = os.environ.get("DSTLAB_TEST_FAULT")

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
