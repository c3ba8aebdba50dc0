"""Resident memory of this process, shared by ``prune_memory.py`` and ``llama_1b.py``.

``rss()`` reads ``/proc/self/statm``; ``Peak`` samples it every millisecond on a thread while its block
runs, so a short-lived peak (a trial copy, a sliced weight) is seen; ``trim()`` collects garbage and
hands glibc's free pages back, so the next measurement starts from live memory.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import threading
import time

_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss() -> int:
    """Resident bytes of this process."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


def trim() -> None:
    """Collect garbage and return freed heap pages to the OS (glibc; elsewhere only the collection)."""
    gc.collect()
    with contextlib.suppress(OSError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class Peak:
    """Peak resident memory while the block runs (a thread samples /proc every millisecond)."""

    def __init__(self) -> None:
        self.peak, self._stop = rss(), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss())
            time.sleep(0.001)

    def __enter__(self) -> Peak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss())
