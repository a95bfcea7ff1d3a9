"""Running one function per party (or peer) on its own thread, and surfacing the error that matters."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

from .errors import PeerTimeout, TransportError

__all__ = ["run_in_threads"]


def run_in_threads(fn: Callable[[str], None], keys: Iterable[str], *, name: str = "medsplit",
                   on_error: Callable[[str, BaseException], None] | None = None,
                   timeout: float | None = None) -> None:
    """Call ``fn(key)`` for every key, each on its own thread, and wait for all of them.

    ``on_error(key, exc)`` runs in the failing thread at once (to wake the others, e.g. by closing the
    transport they wait on). The error raised is the first that is not a TransportError — those are
    usually the others noticing the failure — or else the first one. With ``timeout``, threads still
    running after it are reported by a ``PeerTimeout`` naming their keys (they are daemons and do not
    keep the process alive); without one, ``fn`` must bound its own waits, as every medsplit wait does.
    """
    errors: list[BaseException] = []

    def body(key: str) -> None:
        try:
            fn(key)
        except BaseException as exc:  # noqa: BLE001 - re-raised below, in the caller's thread
            errors.append(exc)
            if on_error is not None:
                on_error(key, exc)

    threads = {k: threading.Thread(target=body, args=(k,), name=f"{name}-{k}", daemon=True) for k in keys}
    for t in threads.values():
        t.start()
    deadline = None if timeout is None else time.monotonic() + timeout
    for t in threads.values():
        t.join(None if deadline is None else max(deadline - time.monotonic(), 0.0))
    stuck = [k for k, t in threads.items() if t.is_alive()]
    if errors:
        raise next((e for e in errors if not isinstance(e, TransportError)), errors[0])
    if stuck:
        raise PeerTimeout(f"{name}: {stuck} did not finish within {timeout:.0f} s",
                          hint="a party or peer is not responding; check that every party is running")
