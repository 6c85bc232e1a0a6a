"""USR2, Slurm's warning before a time limit or a preemption (``sbatch --signal=USR2@90``;
submitit asks for it), makes a run write its checkpoint at the next step boundary instead of up
to ``checkpoint_seconds`` later.

While a run trains, its own handler takes the signal and only notes it: a handler that ran in
the middle of a step could only save a half-updated state. Once the loop has saved, it hands
the signal on to the handler it replaced: submitit's requeues the job, whose next start resumes
from that checkpoint. With no Python handler before it (a plain ``dstlab train``) the run
saves and trains on."""

from __future__ import annotations

import signal
import threading
from typing import Any

SIGNAL_NAME = "SIGUSR2"


class PreemptionNotice:
    """Installs the USR2 handler for the duration of a ``with`` block (main thread only, where
    Python allows handlers; elsewhere it stays inert) and restores the previous one after."""

    def __init__(self) -> None:
        self.signum: int | None = getattr(signal, SIGNAL_NAME, None)  # none on Windows
        self.pending = False
        self._previous: Any = None
        self._installed = False

    def __enter__(self) -> PreemptionNotice:
        if self.signum is None or threading.current_thread() is not threading.main_thread():
            return self
        previous = signal.getsignal(self.signum)
        if previous is None:  # a handler installed outside Python: not ours to replace
            return self
        self._previous = signal.signal(self.signum, self._note)
        self._installed = True
        return self

    def _note(self, signum: int, frame: Any) -> None:
        self.pending = True

    def pass_on(self) -> None:
        """Call after saving: the previous handler gets the signal now (submitit's requeues
        the job and exits this process)."""
        self.pending = False
        if callable(self._previous):
            self._previous(self.signum, None)

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        if not self._installed:
            return
        signal.signal(self.signum, self._previous)
        self._installed = False
        # a signal that came after the run's last save in the block is delayed, never dropped
        if self.pending and kind is None:
            self.pass_on()
