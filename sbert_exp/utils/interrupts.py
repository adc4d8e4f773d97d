"""Ctrl-C that is never lost: a flag that stays set, and short calls that an interrupt waits for.

Python turns SIGINT into a KeyboardInterrupt at whatever line runs next. Two things go wrong:
- the line may be in a `__del__`, a weakref callback or a library's `except BaseException`,
  which swallow it ("Exception ignored in ..."): the sweep goes on as if nothing happened;
- the line may be inside a tracking call (a run created, not yet inside the block that ends
  it; a SQL statement half-sent): the run stays RUNNING.

So SIGINT sets a flag that `check()` turns into a KeyboardInterrupt at the places where work
starts or ends (every tracking call, every job of a sweep), and `shielded()` marks the short
calls during which a first Ctrl-C waits until the call is done. A second Ctrl-C inside a
shielded call raises at once: a store that hangs never holds a user hostage.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

# seen: SIGINT came since install() (only while this module's handler is the process's own);
# pending: a first Ctrl-C inside a shielded call, to be raised when it returns.
_state = {"seen": False, "pending": False, "depth": 0}


def _handler(signum: int, frame: object) -> None:
    _state["seen"] = True
    if _state["depth"] and not _state["pending"]:
        _state["pending"] = True
        return
    raise KeyboardInterrupt


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def install() -> None:
    """Take over SIGINT for this process (the command-line entry points call it first). A SIGINT
    that the process was started ignoring (`nohup`, a background job of a script) stays ignored,
    as Python itself leaves it."""
    reset()
    if _main_thread() and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _handler)


def reset() -> None:
    _state.update(seen=False, pending=False, depth=0)


def interrupted() -> bool:
    """True once Ctrl-C came, whether or not the KeyboardInterrupt it raised got through."""
    return bool(_state["seen"])


def check() -> None:
    """Raise KeyboardInterrupt if Ctrl-C came: one that something swallowed is not lost."""
    if _state["seen"]:
        raise KeyboardInterrupt


@contextlib.contextmanager
def shielded() -> Iterator[None]:
    """A first Ctrl-C inside the block waits for the block to end, then raises there (unless
    the block raised already). Where install() was not called (a library user), the handler is
    Python's default one outside these blocks; where SIGINT is someone else's, or outside the
    main thread, the block runs as it is."""
    if not _main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    own = previous is _handler
    if not own:
        if previous is not signal.default_int_handler:
            yield
            return
        signal.signal(signal.SIGINT, _handler)
    _state["depth"] += 1
    try:
        yield
    finally:
        _state["depth"] -= 1
        raise_now = _state["depth"] == 0 and bool(_state["pending"])
        if _state["depth"] == 0:
            _state["pending"] = False
        if not own:
            signal.signal(signal.SIGINT, previous)
            if _state["depth"] == 0:
                _state["seen"] = False  # nothing of ours outlives the block
    if raise_now:
        raise KeyboardInterrupt
