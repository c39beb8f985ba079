"""Worker processes that never outlive their parent, and a bounded wait on them.

Every process fastpose starts for work (the DALI source workers of the train and eval loaders, convert's pool) calls
`die_with_parent(parent_pid)` at its start. On Linux that asks the kernel for SIGKILL when the parent dies
(`prctl(PR_SET_PDEATHSIG)`), whatever kills the parent (SIGKILL, the OOM killer, a preempting scheduler), then checks
that the parent is still the process that started it (it may have died before the call: the worker would already be
an orphan and no signal would come). Elsewhere a daemon thread polls the parent's pid. The kernel sends the signal
when the *thread* that forked the worker exits, so workers must be started by a thread that lives as long as they do
(the main thread, as here).

The parent side: `exit_reason` turns a worker's exit code into words for the error message, `on_first_exit` calls back
when a worker ends, and `Watchdog` bounds the wait for a batch (by a timeout, and by a short bound once a worker has
died): when a wait runs past it, it calls back (the loader then kills its workers, which wakes DALI's wait with an
error the loader reports), and exits the process with the message if even that does not end the wait.

`FASTPOSE_WORKER_PID_DIR=<folder>`: each worker writes a file named by its pid there ("<role> <parent pid>"), so
tests and cluster tooling can check that none survives (instead of matching process names).
"""

from __future__ import annotations

import ctypes
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing import connection as mp_connection
from pathlib import Path

PID_DIR_ENV = "FASTPOSE_WORKER_PID_DIR"
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_POLL_S = 0.5  # the watchdog thread's period where there is no prctl

_bound_in: int | None = None  # the pid of the process whose binding is done (a forked child inherits the value)


def die_with_parent(parent_pid: int, role: str = "worker") -> None:
    """In a worker process: make sure it ends when `parent_pid` (the process that started it) dies. Idempotent and
    cheap after the first call in a process (callers may call it on every task)."""
    global _bound_in
    me = os.getpid()
    if _bound_in == me or me == parent_pid:  # done already, or not in a worker (the parent unpickled a source)
        return
    _bound_in = me
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            _watch_parent(parent_pid)  # cannot happen on Linux >= 2.1.57; the slower way still works
    else:
        _watch_parent(parent_pid)
    # The parent may have died before prctl: then this process was re-parented (to init or a subreaper) and the
    # signal will never come.
    if os.getppid() != parent_pid:
        os._exit(1)
    folder = os.environ.get(PID_DIR_ENV)
    if folder:
        Path(folder, str(me)).write_text(f"{role} {parent_pid}\n")


def _watch_parent(parent_pid: int) -> None:
    def poll() -> None:
        while os.getppid() == parent_pid:
            time.sleep(_POLL_S)
        os._exit(1)

    threading.Thread(target=poll, name="fastpose-parent-watch", daemon=True).start()


def exit_reason(exitcode: int | None) -> str:
    """A worker's multiprocessing exit code in words: 'was killed by signal 9 (SIGKILL)', 'exited with status 1'."""
    if exitcode is None:
        return "is still running"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = "unknown signal"
        return f"was killed by signal {-exitcode} ({name})"
    return f"exited with status {exitcode}"


def on_first_exit(processes: list, callback: Callable[[], None]) -> None:
    """Call `callback()` from a daemon thread as soon as one of `processes` (multiprocessing.Process) has ended."""
    if not processes:
        return
    sentinels = [p.sentinel for p in processes]
    threading.Thread(target=lambda: (mp_connection.wait(sentinels), callback()), name="fastpose-worker-exit",
                     daemon=True).start()


class Watchdog:
    """Bounds each wait between `start()` and `stop()` to `timeout` seconds (0: no bound), or to `cut(seconds)` once
    something has shown the wait cannot succeed (a worker died).

    When a wait runs past its bound, `on_timeout()` is called from the watchdog's thread (it should make the wait
    fail, e.g. by killing the workers the wait depends on, which wakes DALI's wait with an error the caller reports);
    if the wait still has not ended `grace` seconds later, "error: " + `message()` is printed to stderr and the process
    exits with status 2, as the CLI does for a UserError. That last resort is for a wait stuck on a lock that a killed
    worker held (DALI's task queue: its Condition.notify waits for the dead sleeper forever); nothing else ends it.
    """

    def __init__(self, timeout: float, on_timeout: Callable[[], None], message: Callable[[], str],
                 grace: float = 5.0):
        self.timeout, self.grace, self.on_timeout, self.message = float(timeout), float(grace), on_timeout, message
        self.fired = False
        self._cond = threading.Condition()
        self._since: float | None = None  # monotonic start of the wait in progress
        self._cut: float | None = None  # the bound once cut (seconds, counted from max(wait start, cut time))
        self._cut_at = 0.0
        self._closed = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        with self._cond:
            self._since = time.monotonic()
            self._ensure_thread()
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._since = None
            self._cond.notify()

    def cut(self, seconds: float) -> None:
        """From now on (the wait in progress included) no wait may last more than `seconds`."""
        with self._cond:
            self._cut, self._cut_at = float(seconds), time.monotonic()
            self._ensure_thread()
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed, self._since = True, None
            self._cond.notify()

    def _ensure_thread(self) -> None:
        if self._thread is None and not self._closed and (self.timeout > 0 or self._cut is not None):
            self._thread = threading.Thread(target=self._run, name="fastpose-watchdog", daemon=True)
            self._thread.start()

    def _deadline(self) -> float:
        bounds = [self._since + self.timeout] if self.timeout > 0 else []
        if self._cut is not None:
            bounds.append(max(self._since, self._cut_at) + self._cut)
        return min(bounds) if bounds else math.inf

    def _run(self) -> None:
        with self._cond:
            while not self._closed:
                if self._since is None:
                    self._cond.wait()
                    continue
                since, left = self._since, self._deadline() - time.monotonic()
                if left > 0:
                    self._cond.wait(None if math.isinf(left) else left)
                    continue
                self.fired = True
                self._cond.release()
                try:
                    self.on_timeout()
                finally:
                    self._cond.acquire()
                end = time.monotonic() + self.grace
                while self._since == since and not self._closed and time.monotonic() < end:
                    self._cond.wait(end - time.monotonic())
                if self._since == since and not self._closed:
                    sys.stderr.write(f"error: {self.message()}\n")
                    sys.stderr.flush()
                    os._exit(2)
                return
