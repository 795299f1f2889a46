"""`--workers N`: N server processes behind Kong's one socket, each nginx worker served by one.

Why: one Python process tops out at ~10k credits requests/s however many nginx workers Kong
runs. Events cannot move between processes, and never need to: Kong's connection pool, msgid
counter and instance cache are per nginx worker, so every RPC of a request, and every
StartInstance/CloseInstance behind its instance ids, comes from the worker handling it.

How: the parent (the process Kong starts and SIGTERMs) binds the socket, loads the plugins,
then forks N worker processes. It accepts each connection, reads the peer's pid
(SO_PEERCRED) and hands the socket (SCM_RIGHTS) to the process serving that nginx worker,
over a socketpair per process. From then on that process reads and writes the connection
itself: no proxying, and one handover per connection, which Kong keeps pooled (60 s idle).

Which process serves a pid: the one serving the fewest live nginx workers when the pid first
connects, then always that one. `pid % N` would be as sticky, but balances only when the
workers' pids are consecutive; nginx forks them in a row, yet other forks in between and
`kong reload` (new workers while the old ones drain) leave gaps, and two nginx workers on one
process of two would halve the node. Pids whose process is gone are forgotten when a new pid
arrives. The parent outlives its workers, so the assignment survives a worker's restart.

Per nginx worker, instances and events therefore live in one process. No `serverPid` notice
is sent (as with one process): a restarted worker process starts its id counters afresh
(ids.py), so Kong's cached instance ids miss, Kong hears `no plugin instance` and starts its
instances again, while those of the nginx workers on other processes stay valid.

Lifecycle: a worker that dies is forked again (at most once a second per slot) and its
connections are lost, as they would be with one process (Kong reconnects). Connections for
it that arrive meanwhile wait in its socketpair for the new process. SIGTERM/SIGINT to the
parent stops every worker (each answers its requests in flight, as one process does), then
the parent; the parent also stops when its own parent (Kong) goes away, and a worker stops
when the parent does (EOF on its socketpair).

Plugins are imported once, in the parent, before the fork (fast restarts, memory shared
copy-on-write, frozen out of the GC): state a plugin module makes at import that must differ
per process (random ids, connections) has to be renewed with `os.register_at_fork`.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import selectors
import signal
import socket
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

from .rpc import PluginServer
from .server import _remove_stale_socket, run, run_on_uvloop, serve

__all__ = ["Assignments", "Supervisor", "default_workers", "run_workers"]

logger = logging.getLogger(__name__)

_UCRED = struct.Struct("3i")  # struct ucred {pid_t pid; uid_t uid; gid_t gid;}
_HANDOVER = b"c"  # the byte each handed-over fd travels with


def default_workers() -> int:
    """The cores this process may run on (its CPU affinity), as nginx's `worker_processes auto`
    counts them."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1  # pragma: no cover - Linux has sched_getaffinity


def run_workers(make_rpc: Callable[[], PluginServer], path: str, *, workers: int,
                backlog: int = 4096) -> None:
    """Serve on `path` with `workers` processes; one process is `server.run`, exactly as before
    `--workers` existed (no parent, no handover)."""
    if workers == 1:
        run(make_rpc(), path, backlog=backlog)
    else:
        Supervisor(make_rpc, path, workers, backlog=backlog).run()


def peer_pid(conn: socket.socket) -> int:
    """The pid of the process that connected `conn` (0 if it lives in another pid namespace)."""
    pid, _uid, _gid = _UCRED.unpack(
        conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
    return int(pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive (Kong's workers share our user)
        return True
    return True


class Assignments:
    """Which worker process serves each peer pid: sticky, the least loaded at first sight."""

    def __init__(self, workers: int, alive: Callable[[int], bool] = _alive) -> None:
        self._by_pid: dict[int, int] = {}
        self._load = [0] * workers
        self._alive = alive

    def worker_for(self, pid: int) -> int:
        index = self._by_pid.get(pid)
        if index is None:
            for gone in [p for p in self._by_pid if not self._alive(p)]:
                self._load[self._by_pid.pop(gone)] -= 1
            index = min(range(len(self._load)), key=self._load.__getitem__)
            self._by_pid[pid] = index
            self._load[index] += 1
        return index


@dataclass
class _Slot:
    """Worker process number `index`, and the parent's end of its handover socketpair."""

    index: int
    channel: socket.socket
    child_end: socket.socket | None  # for the next process forked into this slot
    pid: int | None = None
    due: float = 0.0  # monotonic time of its next (re)start


def _channel_pair() -> tuple[socket.socket, socket.socket]:
    """A stream socketpair: a SEQPACKET one would hold only `net.unix.max_dgram_qlen` (10)
    unread handovers; a stream one holds about its send buffer's worth (~270)."""
    parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    parent_end.setblocking(False)
    return parent_end, child_end


class Supervisor:
    """The parent of `--workers N`: binds and accepts, hands connections over, restarts workers.

    Plain blocking code on a selector, no event loop: a process forked from inside a running
    asyncio loop would inherit it.
    """

    def __init__(self, make_rpc: Callable[[], PluginServer], path: str, workers: int, *,
                 backlog: int = 4096, restart_interval_s: float = 1.0,
                 stop_timeout_s: float = 5.0) -> None:
        self.make_rpc = make_rpc
        self.path = path
        self.backlog = backlog
        self.restart_interval_s = restart_interval_s
        self.stop_timeout_s = stop_timeout_s
        self.assignments = Assignments(workers)
        self._slots = [_Slot(i, *_channel_pair()) for i in range(workers)]
        self._stopping = False
        self._pid = os.getpid()
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)

    def run(self) -> None:
        """Serve until SIGTERM/SIGINT or the parent process exits; then stop every worker."""
        parent = os.getppid()
        self._pid = os.getpid()
        _remove_stale_socket(self.path)
        self._listener.bind(self.path)
        self._listener.listen(self.backlog)
        self._listener.setblocking(False)
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        previous = {signum: signal.signal(signum, self._on_signal)
                    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD)}
        previous_wakeup = signal.set_wakeup_fd(self._wake_w.fileno())
        try:
            logger.info("plugin server listening on %s (pid %d, %d worker processes)",
                        self.path, os.getpid(), len(self._slots))
            gc.collect()
            gc.freeze()  # the workers share the loaded plugins copy-on-write
            while not self._stopping:
                self._start_due()
                for key, _events in self._selector.select(self._timeout()):
                    if key.fileobj is self._listener:
                        self._accept()
                    else:
                        self._drain_wakeups()
                self._reap(restart=not self._stopping)
                if os.getppid() != parent:
                    logger.info("parent process %d is gone, stopping", parent)
                    break
            logger.info("stopping the plugin server")
        finally:
            self._shutdown()
            signal.set_wakeup_fd(previous_wakeup)
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def worker_pids(self) -> list[int | None]:
        return [slot.pid for slot in self._slots]

    # -- the parent's loop -------------------------------------------------------------------

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if signum != signal.SIGCHLD:
            self._stopping = True  # the wakeup fd gets the loop out of select()

    def _timeout(self) -> float:
        """Wake at the next due restart, and at least every second for the parent watch."""
        waiting = [slot.due for slot in self._slots if slot.pid is None]
        return max(0.0, min([1.0, *(due - time.monotonic() for due in waiting)]))

    def _drain_wakeups(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while self._wake_r.recv(512):
                pass

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of fds: refused until one frees
                logger.error("accepting a connection failed: %s", exc)
                return
            with conn:
                try:
                    self._hand_over(conn)
                except OSError as exc:
                    logger.error("handing a connection over failed: %s", exc)

    def _hand_over(self, conn: socket.socket) -> None:
        """Send conn to its worker process; the parent's copy closes when this returns."""
        slot = self._slots[self.assignments.worker_for(peer_pid(conn))]
        for _attempt in range(2):
            try:
                socket.send_fds(slot.channel, [_HANDOVER], [conn.fileno()])
                return
            except (BrokenPipeError, ConnectionResetError):
                self._renew_channel(slot)  # the process just died: queue for the next one
            except BlockingIOError:
                break
        logger.warning("worker %d is not taking connections; one was closed", slot.index)

    def _renew_channel(self, slot: _Slot) -> None:
        if slot.child_end is None:
            slot.channel.close()
            slot.channel, slot.child_end = _channel_pair()

    def _reap(self, *, restart: bool) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            slot = next((s for s in self._slots if s.pid == pid), None)
            if slot is None:
                continue
            slot.pid = None
            self._renew_channel(slot)
            if restart:
                logger.warning("worker %d (pid %d) %s; starting it again", slot.index, pid,
                               _exit_reason(status))

    def _start_due(self) -> None:
        now = time.monotonic()
        for slot in self._slots:
            if slot.pid is None and slot.due <= now:
                self._fork(slot)

    def _fork(self, slot: _Slot) -> None:
        if slot.child_end is None:
            self._renew_channel(slot)
        assert slot.child_end is not None
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            pid = os.fork()
        except OSError as exc:
            logger.error("cannot start worker %d: %s", slot.index, exc)
            slot.due = time.monotonic() + self.restart_interval_s
            return
        if pid == 0:
            self._worker(slot, slot.child_end)
        slot.child_end.close()
        slot.child_end = None
        slot.pid = pid
        slot.due = time.monotonic() + self.restart_interval_s  # the soonest restart
        logger.info("worker %d started, pid %d", slot.index, pid)

    def _shutdown(self) -> None:
        """Stop listening, SIGTERM the workers, wait for them (SIGKILL after stop_timeout_s)."""
        self._stopping = True
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(self._listener)
        self._listener.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        for slot in self._slots:
            if slot.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(slot.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout_s
        while any(self.worker_pids()) and time.monotonic() < deadline:
            self._selector.select(deadline - time.monotonic())  # woken by SIGCHLD
            self._drain_wakeups()
            self._reap(restart=False)
        for slot in self._slots:
            if slot.pid is not None:
                logger.warning("worker %d (pid %d) did not stop; killing it", slot.index,
                               slot.pid)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(slot.pid, signal.SIGKILL)
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(slot.pid, 0)
                slot.pid = None
        for slot in self._slots:
            slot.channel.close()
            if slot.child_end is not None:
                slot.child_end.close()
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()

    # -- in a worker process -----------------------------------------------------------------

    def _worker(self, slot: _Slot, channel: socket.socket) -> NoReturn:
        """The forked child: serve what arrives on `channel` until SIGTERM or the parent's
        end closes; never return into the parent's code."""
        code = 1
        try:
            signal.set_wakeup_fd(-1)
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
                signal.signal(signum, signal.SIG_DFL)
            # Hold no other fd of the parent's: an inherited listener would take connections
            # nobody accepts, an inherited channel end would hide the parent's exit from a
            # sibling (no EOF).
            for sock in (self._listener, self._wake_r, self._wake_w):
                sock.close()
            self._selector.close()
            for other in self._slots:
                other.channel.close()
                if other.child_end is not None and other.child_end is not channel:
                    other.child_end.close()
            rpc = self.make_rpc()  # here: fresh id counters in every process (ids.py)
            rpc.server_pid = self._pid
            rpc.worker_index = slot.index
            logger.info("worker %d serving, pid %d", slot.index, os.getpid())
            run_on_uvloop(serve(rpc, self.path, handed=channel, handle_signals=True))
            code = 0
        except BaseException:
            logger.exception("worker %d failed", slot.index)
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)


def _exit_reason(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"was killed by signal {os.WTERMSIG(status)}"
    return f"exited with status {os.waitstatus_to_exitcode(status)}"

