"""The side of ``famr_lab.forkserver`` that runs famr-run: start a server, fork runs from it, or be a famr-run.

Use it where what is tested is famr-run's behaviour, not the console script or the interpreter's
start-up (those keep a real subprocess: tests/test_installed_package.py, the console-script runs of
tests/test_forkserver.py).

    with FamrServer() as server:
        proc = server.run(["method.lam=-1"], cwd=tmp, env=env, timeout=300)   # a CompletedProcess
        child = server.start(["train.epochs=7"], cwd=tmp, env=env)            # Popen-like: pid, poll, send_signal

A tool that starts famr-run itself (famr-reproduce, famr-tune) reaches the server through the client
command ``server.client_command()`` (``python -m famr_lab.forkclient SOCKET ARGS...``), named in its
``FAMR_RUN_COMMAND``: the client hands the server its own stdout and stderr, forwards the signals it
gets to the child and exits with the child's code, so the tool sees a famr-run process.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from famr_lab.forkserver import Lines, kill_group, send_request


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
        send_request(conn, request, fds=[])
        replies = Lines(conn)
        pid = json.loads(replies.read(None))["pid"]
        return ForkedRun(["famr-run", *args], pid, conn, replies, scratch)

    def client_command(self) -> list[str]:
        """The command line of a famr-run that is a child of this server (for ``FAMR_RUN_COMMAND``)."""
        return [sys.executable, "-m", "famr_lab.forkclient", str(self._socket)]

    def close(self) -> None:
        if self._process.poll() is None:
            kill_group(self._process.pid)
            self._process.wait(timeout=30)
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> FamrServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ForkedRun:
    """A famr-run child of the server as ``subprocess.Popen`` shows a process: ``pid``, ``returncode`` (negative
    for a signal), ``poll``, ``wait``, ``send_signal``, ``kill`` and ``communicate`` (its stdout and stderr)."""

    def __init__(self, args: list[str], pid: int, conn: socket.socket, replies: Lines, scratch: Path):
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
        kill_group(self.pid)

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


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.is_file() else ""


def client(socket_path: str, args: list[str]) -> int:
    """``famr-run args`` as a child of the server at ``socket_path``, writing to this process's stdout and
    stderr; the signals this process gets go to the child, and the child's exit is this process's exit."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(socket_path)
    send_request(conn, {"args": args, "cwd": os.getcwd(), "env": dict(os.environ)}, fds=[1, 2])
    replies = Lines(conn)
    pid = json.loads(replies.read(None))["pid"]

    def forward(number: int, _frame) -> None:
        try:
            os.kill(pid, number)
        except ProcessLookupError:
            pass  # the child has just ended: its exit code is on its way

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, forward)
    line = replies.read(None)
    code = json.loads(line)["code"] if line else -signal.SIGKILL
    if code < 0:  # killed by a signal: end the same way, so whoever started this sees what a famr-run shows
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    return code


if __name__ == "__main__":
    sys.exit(client(sys.argv[1], sys.argv[2:]))
