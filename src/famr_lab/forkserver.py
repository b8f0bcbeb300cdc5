"""famr-run without its start-up cost: one server process imports famr once, every run is a fork of it.

A famr-run process spends about 4 s on 2 cores importing torch, timm and Hydra before it reads its
first argument (9 s when the cores are busy; ``time famr-run method.lam=-1``). The test suite and the
bad-input drill start famr-run hundreds of times, mostly for runs that stop at validation, so imports
were most of their time. The server here only imports: it never runs a model, starts no thread pool
and parses no config, so each forked child starts from the state a fresh ``famr-run`` process has
after its imports, with its own arguments, environment, working directory and output files, and
exits with the code famr-run would (``FamrServer.run`` returns a ``subprocess.CompletedProcess``).

Use it where what is tested is famr-run's behaviour, not the console script or the interpreter's
start-up (those keep a real subprocess: tests/test_installed_package.py, the signal tests). Libraries
that make per-process resources at import are kept out of the server (wandb; see ``serve``).

    with FamrServer() as server:
        proc = server.run(["method.lam=-1"], cwd=tmp, env=env, timeout=300)   # a CompletedProcess
        child = server.start(["train.epochs=7"], cwd=tmp, env=env)            # Popen-like: pid, poll, send_signal

A tool that starts famr-run itself (famr-reproduce, famr-tune) reaches the server through the client
command ``server.client_command()`` (``python -m famr_lab.forkserver SOCKET ARGS...``), named in its
``FAMR_RUN_COMMAND``: the client hands the server its own stdout and stderr, forwards the signals it
gets to the child and exits with the child's code, so the tool sees a famr-run process.
"""

from __future__ import annotations

import atexit
import gc
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

# Requests and replies are one JSON document per line on a Unix socket.
_ENCODING = "utf-8"


class FamrServer:
    """A running fork server (a child process of this one); ``close`` or a ``with`` block stops it."""

    def __init__(self, start_timeout: float = 300.0):
        self._dir = Path(tempfile.mkdtemp(prefix="famr-forkserver-"))
        self._socket = self._dir / "socket"
        self._log = self._dir / "server.log"
        with self._log.open("w") as log:
            # -c rather than -m, so this module is not imported a second time as __main__.
            self._process = subprocess.Popen(
                [sys.executable, "-c", f"from famr_lab.forkserver import serve; serve({str(self._socket)!r})"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + start_timeout
        while not self._socket.exists():
            if self._process.poll() is not None:
                raise RuntimeError(f"the famr fork server stopped at start: {_read(self._log)[-2000:]}")
            if time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"the famr fork server did not start within {start_timeout:.0f} s")
            time.sleep(0.05)

    def run(self, args: list[str], cwd: Path | str, env: dict[str, str], timeout: float | None = None) -> subprocess.CompletedProcess:
        """famr-run ``args`` in a forked child; raises ``subprocess.TimeoutExpired`` (child killed) like ``subprocess.run``."""
        child = self.start(args, cwd, env)
        try:
            out, err = child.communicate(timeout)
        except subprocess.TimeoutExpired:
            child.kill()
            out, err = child.output()
            raise subprocess.TimeoutExpired(child.args, timeout or 0, out, err) from None
        finally:
            child.discard_output()
        return subprocess.CompletedProcess(child.args, child.returncode, out, err)

    def start(self, args: list[str], cwd: Path | str, env: dict[str, str]) -> ForkedRun:
        """famr-run ``args`` in a forked child that runs on while the caller goes on; its output goes to files."""
        scratch = Path(tempfile.mkdtemp(dir=self._dir))
        out, err = scratch / "stdout", scratch / "stderr"
        request = {"args": list(args), "cwd": str(cwd), "env": dict(env), "stdout": str(out), "stderr": str(err)}
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(str(self._socket))
        _send_request(conn, request, fds=[])
        replies = _Lines(conn)
        pid = json.loads(replies.read(None))["pid"]
        return ForkedRun(["famr-run", *args], pid, conn, replies, scratch)

    def client_command(self) -> list[str]:
        """The command line of a famr-run that is a child of this server (for ``FAMR_RUN_COMMAND``)."""
        return [sys.executable, "-m", "famr_lab.forkserver", str(self._socket)]

    def close(self) -> None:
        if self._process.poll() is None:
            _kill_group(self._process.pid)
            self._process.wait(timeout=30)
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> FamrServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ForkedRun:
    """A famr-run child of the server as ``subprocess.Popen`` shows a process: ``pid``, ``returncode`` (negative
    for a signal), ``poll``, ``wait``, ``send_signal``, ``kill`` and ``communicate`` (its stdout and stderr)."""

    def __init__(self, args: list[str], pid: int, conn: socket.socket, replies: _Lines, scratch: Path):
        self.args, self.pid, self.returncode = args, pid, None
        self._conn, self._replies, self._scratch = conn, replies, scratch

    def poll(self) -> int | None:
        return self._collect(0.0)

    def wait(self, timeout: float | None = None) -> int:
        if self._collect(timeout) is None:
            raise subprocess.TimeoutExpired(self.args, timeout or 0)
        return self.returncode  # type: ignore[return-value]

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        """The child and whatever it started (a joblib pool, wandb's service)."""
        _kill_group(self.pid)

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        self.wait(timeout)
        return self.output()

    def output(self) -> tuple[str, str]:
        """What the child wrote so far to stdout and stderr."""
        return _read(self._scratch / "stdout"), _read(self._scratch / "stderr")

    def discard_output(self) -> None:
        shutil.rmtree(self._scratch, ignore_errors=True)

    def _collect(self, timeout: float | None) -> int | None:
        if self.returncode is None:
            line = self._replies.read(timeout)
            if line is not None:
                # The server reports the exit status; an empty reply means it went away with the child unreported.
                self.returncode = json.loads(line)["code"] if line else -signal.SIGKILL
                self._conn.close()
        return self.returncode


class _Lines:
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
        return line.decode(_ENCODING)


def _send_request(conn: socket.socket, request: dict, fds: list[int]) -> None:
    """One byte carrying the caller's stdout and stderr (when it passes them), then the request as a JSON line."""
    socket.send_fds(conn, [b"\0"], fds)
    conn.sendall((json.dumps(request) + "\n").encode(_ENCODING))


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.is_file() else ""


def _kill_group(pid: int) -> None:
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
        line = _Lines(conn).read(None)
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
        conn.sendall((json.dumps({"pid": pid}) + "\n").encode(_ENCODING))
        threading.Thread(target=_report_exit, args=(conn, pid), daemon=True).start()


def _report_exit(conn: socket.socket, pid: int) -> None:
    _, status = os.waitpid(pid, 0)
    try:
        conn.sendall((json.dumps({"code": os.waitstatus_to_exitcode(status)}) + "\n").encode(_ENCODING))
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


def client(socket_path: str, args: list[str]) -> int:
    """``famr-run args`` as a child of the server at ``socket_path``, writing to this process's stdout and
    stderr; the signals this process gets go to the child, and the child's exit is this process's exit."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(socket_path)
    _send_request(conn, {"args": args, "cwd": os.getcwd(), "env": dict(os.environ)}, fds=[1, 2])
    replies = _Lines(conn)
    pid = json.loads(replies.read(None))["pid"]
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda number, _frame: os.kill(pid, number))
    line = replies.read(None)
    code = json.loads(line)["code"] if line else -signal.SIGKILL
    if code < 0:  # killed by a signal: end the same way, so whoever started this sees what a famr-run shows
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    return code


if __name__ == "__main__":
    sys.exit(client(sys.argv[1], sys.argv[2:]))
