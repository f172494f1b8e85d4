"""A fork server that starts worker processes where ``multiprocessing`` cannot.

A Dask worker process is daemonic, and daemonic processes may not start ``multiprocessing``
children; starting a fresh interpreter costs a fifth of a second. So the first attempt in
a process starts one server (``python -c ... serve(fd)``): single-threaded, it imports the
worker process's body once, then forks a copy of itself per worker process. Each copy runs
``slot.slot_main`` — the local executor's warm worker process and its pipe protocol — in a
process group of its own, so a stop can kill everything the worker started.

Protocol on the control socket (one request in flight, under the client's lock): the client
sends one byte with two descriptors (its end of the attempt's connection and the write end
of an exit pipe); the server forks and answers the child's pid (4 bytes). When the child
ends, the server writes its exit code (4 bytes: ``-N`` for signal N) to the exit pipe. The
client learns that the server died from its control socket; the server ends when its client
does (end-of-file), and a worker process ends itself when its connection closes (see
slot.py). The server is a child subreaper: what a worker process leaves when it dies (a
helper that left its process group) becomes the server's child, and is killed when that
process is reaped.
"""

from __future__ import annotations

import collections
import os
import selectors
import signal
import socket
import struct
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from multiprocessing.connection import Connection

_INT = struct.Struct("i")


@dataclass
class Child:
    """A launched worker process: its pid, its connection (``slot.py``'s protocol), a pipe
    that becomes readable with the exit code when it ends (end-of-file: unknown), and the
    code keys it was sent, least recently used first."""

    pid: int
    conn: Connection
    exit_fd: int
    codes: collections.OrderedDict[str, None] = field(default_factory=collections.OrderedDict)

    def read_exit_code(self) -> int | None:
        try:
            data = os.read(self.exit_fd, _INT.size)
        except OSError:
            return None
        return _INT.unpack(data)[0] if len(data) == _INT.size else None

    def close(self) -> None:
        self.conn.close()
        try:
            os.close(self.exit_fd)
        except OSError:
            pass


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("the attempt launcher ended")
        data += chunk
    return data


class Launcher:
    """The client side: one per process, thread-safe; starts its server on first use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._control: socket.socket | None = None
        self._server: subprocess.Popen | None = None

    def _start_server(self) -> socket.socket:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        command = [sys.executable, "-c", "import sys; from nbwork._executors.launcher import "
                   "serve; serve(int(sys.argv[1]))", str(theirs.fileno())]
        try:
            self._server = subprocess.Popen(command, pass_fds=[theirs.fileno()],
                                            stdin=subprocess.DEVNULL)
        finally:
            theirs.close()
        self._control = ours
        return ours

    def _request(self, conn_fd: int, exit_fd: int) -> int:
        with self._lock:
            for tries_left in (1, 0):
                control = self._control
                if control is None or (self._server and self._server.poll() is not None):
                    self._shutdown_server()
                    control = self._start_server()
                try:
                    socket.send_fds(control, [b"L"], [conn_fd, exit_fd])
                    return _INT.unpack(_recv_exact(control, _INT.size))[0]
                except OSError:  # the server died (killed): start another once
                    self._shutdown_server()
                    if not tries_left:
                        raise
        raise AssertionError("unreachable")

    def launch(self) -> Child:
        """Start a warm worker process (``slot.slot_main(conn)``)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        exit_r, exit_w = os.pipe()
        try:
            pid = self._request(theirs.fileno(), exit_w)
        except BaseException:
            ours.close()
            os.close(exit_r)
            raise
        finally:
            theirs.close()
            os.close(exit_w)
        return Child(pid, Connection(ours.detach()), exit_r)

    def _shutdown_server(self) -> None:
        if self._control is not None:
            self._control.close()
            self._control = None
        if self._server is not None:
            try:
                self._server.wait(5)
            except subprocess.TimeoutExpired:
                self._server.kill()
                self._server.wait()
            self._server = None


# --- the server -------------------------------------------------------------------------


def _run_forked(conn_fd: int, closing: list[int]) -> None:
    """In the forked copy: become a fresh worker process and never return."""
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for fd in closing:
            try:
                os.close(fd)
            except OSError:
                pass
        try:
            os.setpgid(0, 0)
        except OSError:
            pass
        from .slot import slot_main

        slot_main(Connection(conn_fd))
    finally:
        os._exit(1)  # it ends itself when its connection closes; this is for a failure


def serve(control_fd: int) -> None:
    """The server's loop (in its own process); returns when its client is gone."""
    from . import slot  # noqa: F401 (imported once here, inherited by every fork)
    from .process_groups import become_subreaper, kill_orphans_of

    # What a dead attempt process orphaned (a helper in a session of its own) becomes our
    # child, and is killed when we reap that attempt.
    become_subreaper()
    control = socket.socket(fileno=control_fd)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so the wake-up fd is written
    exits: dict[int, int] = {}
    selector = selectors.PollSelector()  # no descriptor of its own for the forks to inherit
    selector.register(control, selectors.EVENT_READ)
    selector.register(wake_r, selectors.EVENT_READ)
    while True:
        for key, _ in selector.select():
            if key.fileobj is control:
                message, fds, _, _ = socket.recv_fds(control, 1, 2)
                if not message:
                    return
                conn_fd, exit_fd = fds
                pid = os.fork()
                if pid == 0:
                    _run_forked(conn_fd, [control.fileno(), wake_r, wake_w, exit_fd,
                                          *exits.values()])
                try:
                    os.setpgid(pid, pid)  # also here: a kill right after launch must find it
                except OSError:
                    pass
                os.close(conn_fd)
                exits[pid] = exit_fd
                control.sendall(_INT.pack(pid))
            else:
                try:
                    while os.read(wake_r, 4096):
                        pass
                except BlockingIOError:
                    pass
        ended = False
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            fd = exits.pop(pid, None)
            if fd is not None:
                ended = True
                try:
                    os.write(fd, _INT.pack(os.waitstatus_to_exitcode(status)))
                except OSError:
                    pass
                os.close(fd)
        if ended:
            kill_orphans_of(os.getpid(), keep=set(exits))
