"""Loaded at start-up by every process of a test's data-parallel job (this folder is put on
PYTHONPATH): rank 1 misbehaves as $DSTLAB_TEST_FAULT asks. Test-only; the library has no hook."""

import os

_FAULT = os.environ.get("DSTLAB_TEST_FAULT")

if _FAULT and os.environ.get("RANK") == "1":
    import torch

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
        original_apply = masks.MaskedTarget.apply

        def diverging_apply(self, new_mask, changed, optimizer):
            if self.name == "fc2.weight":  # rank 1 swaps one active weight for an inactive one
                new_mask = new_mask.clone().view(-1)
                on, off = new_mask.nonzero()[0], (~new_mask).nonzero()[0]
                new_mask[on], new_mask[off] = False, True
                new_mask = new_mask.view(self.shape)
            original_apply(self, new_mask, changed | ~torch.ones_like(changed), optimizer)

        masks.MaskedTarget.apply = diverging_apply
