"""Stop signals: SIGTERM and SIGUSR1 (SLURM pre-emption) only ask a run to stop at a step's end.

Imports nothing slow, so the CLI can install the handler before it loads torch: a signal that
comes in the first seconds of a training command is kept for the run (which then stops before
its first step) instead of killing the process, SIGUSR1's default action.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

_received: dict[str, str] = {}  # {"signal": name} of this process's first stop signal
_depth = 0  # nested stop_signals_recorded() blocks; the outermost forgets the signal at its end


def _record(signum: int, _frame: object) -> None:
    _received.setdefault("signal", signal.Signals(signum).name)


@contextmanager
def stop_signals_recorded() -> Iterator[dict[str, str]]:
    """Record SIGTERM/SIGUSR1 instead of dying of them, and restore the old handlers after.

    Yields the record, {"signal": name} once one came. Blocks nest (the CLI's around the
    engine's) and share one record, so a signal that came before training started, or that
    stopped one run of a multi-stage command, is still there for the next run. Outside the
    main thread, where handlers cannot be installed, the record stays empty.
    """
    global _depth
    if threading.current_thread() is not threading.main_thread():
        yield {}
        return
    previous = {s: signal.signal(s, _record) for s in STOP_SIGNALS}
    _depth += 1
    try:
        yield _received
    finally:
        _depth -= 1
        for s, old in previous.items():
            signal.signal(s, old)
        if _depth == 0:
            _received.clear()


@contextmanager
def stop_signals_blocked() -> Iterator[None]:
    """Hold SIGTERM/SIGUSR1 back (not lost: delivered on exit) while child processes start, so
    loader workers are born unable to die of them before they can ignore them."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
