"""SIGTERM/SIGINT ask an engine to stop cleanly: finish the batch, checkpoint, commit, close."""

from __future__ import annotations

import signal
from typing import Protocol

__all__ = ["install_stop_signals"]


class Stoppable(Protocol):
    @property
    def stop_requested(self) -> bool: ...

    def request_stop(self, reason: str = "stop requested") -> None: ...


def install_stop_signals(engine: Stoppable) -> None:
    """SIGTERM/SIGINT ask the engine to stop cleanly; a second SIGINT interrupts at once."""

    def _handler(signum, _frame):
        if signum == signal.SIGINT and engine.stop_requested:
            raise KeyboardInterrupt
        engine.request_stop(f"received {signal.Signals(signum).name}")

    signal.signal(signal.SIGTERM, _handler)
    signal.signal(signal.SIGINT, _handler)
