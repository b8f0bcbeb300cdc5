"""famr_lab.forkserver and forkclient: a forked famr-run behaves as the console script does (codes, messages, env, cwd,
timeouts, signals through its client)."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest

from conftest import FAMR_RUN, cli_env, famr_server

pytestmark = pytest.mark.slow


def _error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    # Without the timestamp prefix, which differs between two runs.
    return [line.split("] - ", 1)[-1] for line in (proc.stdout + proc.stderr).splitlines() if "[ERROR]" in line or "Error" in line]


@pytest.mark.parametrize(
    "args",
    [
        # famr's own validation: exit 2, one sentence (an unknown key leaves by the same path; tests/test_tuned_config.py)
        ["method.lam=-1"],
        ["no_such_key=1"],  # Hydra's own override error: exit 1
        ["--info", "searchpath"],  # a print-only flag: exit 0
    ],
)
def test_a_forked_run_exits_and_reports_as_the_console_script_does(tmp_path, args):
    env = cli_env(tmp_path)

    def with_run_dir(name: str) -> list[str]:
        return args if args[0].startswith("--") else [*args, f"hydra.run.dir={tmp_path / name}", "evaluate.reference=none"]

    real = subprocess.run([FAMR_RUN, *with_run_dir("real")], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    forked = famr_server().run(with_run_dir("forked"), cwd=tmp_path, env=env, timeout=300)
    assert forked.returncode == real.returncode
    assert _error_lines(forked) == _error_lines(real)
    assert "Traceback" not in forked.stderr
    if args[0] == "--info":
        assert forked.stdout == real.stdout


def test_a_forked_run_takes_the_requests_environment_and_working_directory(tmp_path):
    env = cli_env(tmp_path, FAMR_CACHE_DIR=str(tmp_path / "elsewhere"))
    proc = famr_server().run(["--cfg", "job", "--resolve"], cwd=tmp_path, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"cache_dir: {tmp_path / 'elsewhere'}" in proc.stdout

    relative = famr_server().run(["method.lam=-1", "hydra.run.dir=relative_run"], cwd=tmp_path, env=cli_env(tmp_path), timeout=300)
    assert relative.returncode == 2
    assert (tmp_path / "relative_run" / "results.json").is_file()


def test_a_run_past_its_timeout_is_killed_and_the_server_goes_on(tmp_path):
    env = cli_env(tmp_path)
    start = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        famr_server().run(
            ["train.epochs=10000", "evaluate.reference=none", f"hydra.run.dir={tmp_path / 'long'}"], cwd=tmp_path, env=env, timeout=3
        )
    assert time.monotonic() - start < 60
    after = famr_server().run(["method.lam=-1", f"hydra.run.dir={tmp_path / 'after'}"], cwd=tmp_path, env=env, timeout=300)
    assert after.returncode == 2


def test_the_client_command_is_a_famr_run_process_to_whoever_starts_it(tmp_path):
    """What famr-reproduce and famr-tune start under FAMR_RUN_COMMAND: output, exit code and signals relayed."""
    client, env = famr_server().client_command(), cli_env(tmp_path)
    bad_args = [*client, "method.lam=-1", f"hydra.run.dir={tmp_path / 'bad'}"]
    bad = subprocess.run(bad_args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "method.lam must be >= 0 (got -1)" in bad.stdout + bad.stderr

    long_run = ["train.epochs=10000", "evaluate.reference=none", f"hydra.run.dir={tmp_path / 'long'}"]
    proc = subprocess.Popen([*client, *long_run], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log, deadline = tmp_path / "long" / "famr.log", time.monotonic() + 120
    while not (log.is_file() and "training it" in log.read_text()):
        assert proc.poll() is None and time.monotonic() < deadline, "the run never started training"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)  # to the client, which hands it to the famr-run child
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM
    assert "Interrupted by SIGTERM" in out + err and "Traceback" not in out + err
