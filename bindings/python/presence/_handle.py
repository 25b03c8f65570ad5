"""The base of the handle classes: close(), a context manager, a guarded
__del__ (a safety net only: close() or `with` is the way)."""
from __future__ import annotations

import threading
from typing import Any, Callable, Optional

from .errors import FailedPrecondition, InvalidArgument

# Set while a push sink runs on this thread: a handle must not be destroyed
# from inside a sink (presence/c.h), so close() refuses there.
in_sink = threading.local()


class Handle:
    """Owns one opaque pointer of presence/c.h and the function that frees it."""

    _kind = "handle"
    _ptr: Optional[int] = None
    _destroy: Optional[Callable[[Any], None]] = None

    def _adopt(self, ptr: Optional[int], destroy: Callable[[Any], None]) -> None:
        self._destroy = destroy
        self._ptr = ptr

    def _p(self) -> int:
        ptr = self._ptr
        if ptr is None:
            raise InvalidArgument(f"{self._kind} is closed")
        return ptr

    @property
    def closed(self) -> bool:
        return self._ptr is None

    def close(self) -> None:
        """Releases the handle. Closing twice is fine. Must be the last call on
        it (no call of another thread in progress), and may not be made from
        inside a push sink (FailedPrecondition)."""
        if getattr(in_sink, "depth", 0):
            raise FailedPrecondition(f"{self._kind}.close() called from inside a push sink")
        self._release()

    def _release(self) -> None:
        ptr, self._ptr = self._ptr, None
        if ptr is not None and self._destroy is not None:
            self._destroy(ptr)

    def __enter__(self):  # type: ignore[no-untyped-def]
        self._p()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            if self._ptr is not None and not getattr(in_sink, "depth", 0):
                self._release()
        except Exception:  # interpreter shutdown: modules may be gone
            pass

    def __repr__(self) -> str:
        state = "closed" if self._ptr is None else f"at 0x{self._ptr:x}"
        return f"<presence.{type(self).__name__} {state}>"
