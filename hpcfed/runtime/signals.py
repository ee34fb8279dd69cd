"""Stop signals: SIGUSR1 (SLURM's warning before the time limit), SIGTERM (scancel, a pre-emption) and SIGINT
(Ctrl-C; mpiexec and srun forward it to every rank) only set a flag.

During set-up nothing is worth saving yet: long steps call `raise_if_stopped` between batches and `agree` stops
every rank together at its next collective. Once rounds run, the round loop acts at the next round boundary,
where all ranks agree, checkpoint and exit with EXIT_STOPPED. A second Ctrl-C stops a rank at once."""

from __future__ import annotations

import signal

STOP_SIGNALS = (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT)
EXIT_STOPPED = 75  # sysexits EX_TEMPFAIL: stopped on a signal (after a checkpoint if rounds had run); requeue
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a Ctrl-C: stopped at once, no checkpoint of this round

_active: StopRequest | None = None


class Stopped(Exception):
    """Raised by `raise_if_stopped` in a long set-up step; `agree` turns it into a clean stop of every rank."""


class StopRequest:
    def __init__(self) -> None:
        global _active
        self.received: str | None = None
        self.in_setup = True
        self._previous = {s: signal.signal(s, self._handle) for s in STOP_SIGNALS}
        _active = self

    def _handle(self, signum: int, frame) -> None:
        if signum == signal.SIGINT and self.received is not None:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt  # the second Ctrl-C: no round boundary wait
        self.received = self.received or signal.Signals(signum).name

    def rounds_started(self) -> None:
        """From here a signal is acted on at the next round boundary, with a checkpoint."""
        self.in_setup = False

    def restore(self) -> None:
        global _active
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        if _active is self:
            _active = None


def stop_in_setup() -> str | None:
    """The signal that asked this process to stop while it is still setting up, if any."""
    return _active.received if _active is not None and _active.in_setup else None


def raise_if_stopped() -> None:
    """For loops that can run for minutes before the first round (extraction, evaluation, decoding)."""
    if stop_in_setup():
        raise Stopped(stop_in_setup())
