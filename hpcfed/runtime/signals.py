"""SIGUSR1 / SIGTERM (SLURM's warning before the time limit, scancel, a pre-emption) only set a flag; the round
loop acts on it at the next round boundary, where all ranks agree, checkpoint and exit."""

from __future__ import annotations

import signal

STOP_SIGNALS = (signal.SIGUSR1, signal.SIGTERM)


class StopRequest:
    def __init__(self) -> None:
        self.received: str | None = None
        self._previous = {s: signal.signal(s, self._handle) for s in STOP_SIGNALS}

    def _handle(self, signum: int, frame) -> None:
        self.received = signal.Signals(signum).name

    def restore(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
