"""famr-run without its start-up cost: one server process imports famr once, every run is a fork of it.

A famr-run process spends about 4 s on 2 cores importing torch, timm and Hydra before it reads its
first argument (9 s when the cores are busy; ``time famr-run method.lam=-1``). The test suite and the
bad-input drill start famr-run hundreds of times, mostly for runs that stop at validation, so imports
were most of their time. The server here only imports: it never runs a model, starts no thread pool
and parses no config, so each forked child starts from the state a fresh ``famr-run`` process has
after its imports, with its own arguments, environment, working directory and output files, and
exits with the code famr-run would. Libraries that make per-process resources at import are kept out
of the server (wandb; see ``serve``). ``famr_lab.forkclient`` starts a server and talks to it.

The wire: a request is one byte, carrying the caller's stdout and stderr as file descriptors when it
passes them, then one JSON line (arguments, working directory, environment, and output files when no
descriptors came); the replies are one JSON line with the child's pid, then one with its exit code.
"""

from __future__ import annotations

import atexit
import gc
import json
import os
import select
import signal
import socket
import sys
import threading
import time
import traceback

ENCODING = "utf-8"


class Lines:
    """Newline-ended replies read off a socket with a timeout (None: wait; 0: only what already came)."""

    def __init__(self, conn: socket.socket):
        self._conn, self._buffer = conn, b""

    def read(self, timeout: float | None) -> str | None:
        """The next line, "" once the other end closed, None if nothing came within ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not select.select([self._conn], [], [], left)[0]:
                return None
            chunk = self._conn.recv(65536)
            if not chunk:
                return ""
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode(ENCODING)


def send_request(conn: socket.socket, request: dict, fds: list[int]) -> None:
    """One byte carrying the caller's stdout and stderr (when it passes them), then the request as a JSON line."""
    socket.send_fds(conn, [b"\0"], fds)
    conn.sendall((json.dumps(request) + "\n").encode(ENCODING))


def kill_group(pid: int) -> None:
    """The child and whatever it started (a joblib pool, wandb's service): each child leads its own session."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def serve(socket_path: str) -> None:
    """The server loop: import famr once, then fork one child per request until killed."""
    # wandb creates a media temp dir at import and deletes it at exit: every child would delete the one
    # dir they all share. timm imports wandb only where it is installed, so the server holds it back
    # (timm then leaves out its own wandb logging, which famr never uses) and each child imports its own
    # when famr's wandb logger starts.
    sys.modules["wandb"] = None  # type: ignore[assignment]
    try:
        import famr_cli.cli  # noqa: F401  (the imports every child inherits; nothing else runs here)
    finally:
        del sys.modules["wandb"]
    # Everything imported so far is shared by every child: moved out of the collector's reach, so a child's
    # collections neither scan it nor write to its pages (each write copies a page the child shares with
    # the server). A forked `famr-run --cfg job` took 2.1 s without this and the fast exit below, 0.26 s
    # with both (2 Intel Xeon cores, torch 2.14.1).
    gc.freeze()

    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    partial = socket_path + ".partial"
    listener.bind(partial)
    listener.listen(16)
    os.rename(partial, socket_path)  # the client waits for this name: the server is ready once it exists
    while True:
        conn, _ = listener.accept()
        _, fds, _, _ = socket.recv_fds(conn, 1, 2)
        line = Lines(conn).read(None)
        if not line:  # the client went away before it asked for anything
            for fd in fds:
                os.close(fd)
            conn.close()
            continue
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            listener.close()
            conn.close()
            _run_child(request, fds)  # never returns: the child ends through sys.exit
        for fd in fds:
            os.close(fd)
        conn.sendall((json.dumps({"pid": pid}) + "\n").encode(ENCODING))
        threading.Thread(target=_report_exit, args=(conn, pid), daemon=True).start()


def _report_exit(conn: socket.socket, pid: int) -> None:
    _, status = os.waitpid(pid, 0)
    try:
        conn.sendall((json.dumps({"code": os.waitstatus_to_exitcode(status)}) + "\n").encode(ENCODING))
    except OSError:
        pass  # the client gave up (its timeout) and killed the child
    finally:
        conn.close()


def _run_child(request: dict, fds: list[int]) -> None:
    """Become ``famr-run <args>``: own session, the client's stdout/stderr (``fds``) or the request's files,
    the request's cwd and environment, and Ctrl-C raising KeyboardInterrupt as in a famr-run started from a
    terminal (whatever the process that started the server had made of SIGINT).

    It never returns into the server loop. The child ends as a famr-run process does, step for step:
    non-daemon threads joined (e.g. joblib's worker pools), then the atexit handlers (logging's flush
    among them), then the streams flushed, with the exit code and message ``sys.exit`` or an uncaught
    exception would give. What it skips is the interpreter's teardown of the modules it inherited: that
    teardown walks every object torch, timm and Hydra made and copies each page it touches, 1.8 s a
    child on 2 cores for nothing a run leaves behind.
    """
    os.setsid()
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    targets = fds or [os.open(request[name], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600) for name in ("stdout", "stderr")]
    for fd, target in zip((1, 2), targets):
        os.dup2(target, fd)
        os.close(target)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = ["famr-run", *request["args"]]
    from famr_cli.cli import main

    interrupted = False
    try:
        main()
        code = 0
    except SystemExit as stop:
        code = _exit_code(stop.code)
    except KeyboardInterrupt:
        traceback.print_exc()
        code, interrupted = 1, True
    except BaseException:
        traceback.print_exc()
        code = 1
    threading._shutdown()  # type: ignore[attr-defined]  (what the interpreter's own exit calls first)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    if interrupted:  # an uncaught Ctrl-C ends a Python process by SIGINT itself
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    os._exit(code)


def _exit_code(value: object) -> int:
    """The process exit code of ``sys.exit(value)``: None is 0, an int is itself, anything else is printed and 1."""
    if value is None:
        return 0
    if isinstance(value, int):
        return value & 0xFF
    print(value, file=sys.stderr)
    return 1
