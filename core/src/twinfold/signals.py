"""Stop signals, with no heavy import: the command line installs them before anything
else, so SIGTERM or SIGUSR1 in the first seconds of a run is honoured too (exit status
:data:`PREEMPTED_EXIT_CODE`) instead of ending the process."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import threading
from types import FrameType
from typing import Any

PREEMPTED_EXIT_CODE = 75
"""Exit status after a preemption signal was honoured (``EX_TEMPFAIL``: try again; the
run continues with ``run.resume=true``)."""

STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGUSR1)
"""SIGTERM (schedulers, ``kill``) and SIGUSR1 (SLURM's usual pre-timeout signal, e.g.
``#SBATCH --signal=USR1@120``)."""


class StopSignals:
    """Context manager: while active, :data:`STOP_SIGNALS` set :attr:`received` (the
    first one wins) instead of ending the process. Outside the main thread (where Python
    cannot install handlers) it does nothing."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signum

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
            outer = self._outer()
            if outer is not None and self.received is None:
                self.received = outer.received  # a signal before this block still counts
        return self

    def __exit__(self, *exc: object) -> None:
        outer = self._outer()
        if outer is not None and outer.received is None:
            outer.received = self.received  # and one during it reaches the outer block
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _outer(self) -> StopSignals | None:
        """The StopSignals whose handler this one replaced, if any."""
        handler = next(iter(self._previous.values()), None)
        owner = getattr(handler, "__self__", None)
        return owner if isinstance(owner, StopSignals) else None

    @property
    def signal_name(self) -> str | None:
        return None if self.received is None else signal.Signals(self.received).name


class ForwardSignals(StopSignals):
    """For a launcher process whose ranks are its ``multiprocessing`` children
    (``ddp_spawn``): pass :data:`STOP_SIGNALS` on to them, so that a signal sent to the
    launcher (or to the whole job) stops the ranks at a step boundary instead of killing
    the launcher and orphaning them."""

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        super()._handle(signum, frame)
        for child in multiprocessing.active_children():
            if child.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, signum)
