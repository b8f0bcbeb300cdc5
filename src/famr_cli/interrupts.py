"""Ctrl-C and SIGTERM that a run never loses.

Python runs a signal handler between two bytecodes of the main thread, whatever that thread is doing.
When it is inside a finaliser (an object's ``__del__``, a generator closed as it is freed, a weakref
callback), the exception the handler raises is printed as "Exception ignored in ..." and dropped, and
the run would carry on to the end as if nobody had pressed Ctrl-C. So the handlers also record the
signal, and the training loop asks ``raise_if_interrupted`` once a step: a dropped interrupt still stops
the run within one step, through the same exit as one that was not dropped.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable

from famr_cli.errors import RunInterrupted

_pending: int | None = None


def _handler(signum: int, frame) -> None:
    global _pending
    _pending = signum
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise RunInterrupted(signum)


def catch_interrupts() -> Callable[[], None]:
    """Install the handlers for SIGTERM (a scheduler's kill, ``kill PID``) and SIGINT; returns the undo.

    SIGINT is taken over only where Python's own Ctrl-C handler holds it: a run started in the
    background without job control inherits SIGINT ignored and keeps it so.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None  # signal handlers can only be set from the main thread
    previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, _handler)}
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        previous[signal.SIGINT] = signal.signal(signal.SIGINT, _handler)

    def restore() -> None:
        global _pending
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _pending = None

    return restore


def raise_if_interrupted() -> None:
    """Raise the interrupt a finaliser swallowed, if one did; nothing otherwise."""
    if _pending is not None:
        raise RunInterrupted(_pending)
