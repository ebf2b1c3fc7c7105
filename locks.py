"""A lock for module-level state that a forked child gets back unlocked.

``os.fork`` copies a lock as it is: if another thread held it at that moment, the child's copy
stays locked for good (no thread there will release it) and the child hangs at its first use,
say a first ``generate`` after ``torch.set_num_threads(1)``, the usual call after a fork. So the
child makes itself a new one, as ``logging`` does for its own locks.
"""

from __future__ import annotations

import os
import threading


class ForkSafeLock:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        if hasattr(os, "register_at_fork"):  # not on Windows, which does not fork
            os.register_at_fork(after_in_child=self._renew)

    def _renew(self) -> None:
        self._lock = threading.Lock()

    def __enter__(self) -> ForkSafeLock:
        self._lock.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self._lock.release()
