"""A warm interpreter that forks one child per ``visbricks`` command of the README/preset tests.

Every console-script call pays ~3.5 s of imports before it does anything (torch, torchvision —
whose ``ops`` import ``torch._dynamo`` — matplotlib, our tasks), and the suite makes ~130 of
them: a third of its run time. The server pays the imports once per test process; each command
then runs in a fresh ``fork()`` of it, so it still is its own process: its own working folder,
environment, file descriptors, exit code, and nothing it changes (config, registries, globals)
reaches the next command. The child runs exactly what the console script runs (``sys.argv``
set, ``visbricks.cli.main()`` with no argv, its return value the exit code; an uncaught
exception prints its traceback and exits 1, as the interpreter does).

What it cannot give is what a process reads only at start-up: the server starts with the
environment every command gets (``OMP_NUM_THREADS=1``, ``MPLBACKEND=Agg``), and a command's own
``HOME`` is set before it runs. The fork is refused (the harness falls back to a subprocess)
unless the server is single-threaded when it forks. ``VISBRICKS_TESTS_SPAWN=1`` makes every
command a plain subprocess again; ``test_wheel.py`` always uses one.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# The server: reads one JSON request per line, answers one JSON line per request.
SERVER = r"""
import atexit, json, os, signal, sys, threading, time, traceback

import torch, torchvision  # noqa: F401  the import cost every command would pay
import visbricks.cli as cli
import visbricks.deploy.export, visbricks.deploy.loading, visbricks.engine.trainer  # noqa: F401
import visbricks.tasks  # noqa: F401
import onnx, torch.onnx._internal.exporter._core  # noqa: F401  export's own imports (not
# onnxruntime: importing it starts a thread, and a fork must not have one)

threads = len(os.listdir("/proc/self/task"))
print(json.dumps({"threads": threads}), flush=True)


def child(req):
    os.setpgid(0, 0)  # its own group: a timeout kills what it started (torchrun, workers)
    os.chdir(req["cwd"])
    os.environ.clear()
    os.environ.update(req["env"])
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    for fd, path in ((1, req["stdout"]), (2, req["stderr"])):
        f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(f, fd)
        os.close(f)
    sys.stdin = open(0, closefd=False)
    sys.argv = [req["argv0"], *req["args"]]
    cli._STARTED = time.time()  # the command's clock starts now, as at a process start
    try:
        code = cli.main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if not isinstance(e.code, (int, type(None))):
            print(e.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
        code = 1
    try:
        threading._shutdown()  # as the interpreter's exit: wait for non-daemon threads,
        atexit._run_exitfuncs()  # then the atexit functions
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code if isinstance(code, int) else 1)


def kill_group(pid):
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


for line in sys.stdin:
    req = json.loads(line)
    pid = os.fork()
    if pid == 0:
        try:
            child(req)
        finally:
            os._exit(70)  # child() never returns; this only guards a failure inside it
    try:
        os.setpgid(pid, pid)  # also here: no window in which a kill would miss its group
    except OSError:
        pass
    deadline = time.monotonic() + req["timeout"]
    timed_out = False
    try:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                timed_out = True
                kill_group(pid)
                _, status = os.waitpid(pid, 0)
                break
            time.sleep(0.01)
    except BaseException:  # the test run was interrupted: take the command and its children along
        kill_group(pid)
        raise
    rc = os.waitstatus_to_exitcode(status)
    print(json.dumps({"rc": rc, "timed_out": timed_out}), flush=True)
"""


class ForkServer:
    def __init__(self, python: str, env: dict[str, str]) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="visbricks-forkserver-"))
        env = {**env, "HOME": str(self.tmp)}
        self.proc = subprocess.Popen(
            [python, "-c", SERVER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            cwd=self.tmp,
            text=True,
        )
        hello = self.proc.stdout.readline()  # "" when it failed to start (its error is shown)
        self.threads = json.loads(hello)["threads"] if hello else None
        self.ok = self.threads == 1
        if not self.ok:
            self.close()

    def run(
        self, argv0: str, args: list[str], cwd: Path, env: dict[str, str], timeout: float
    ) -> tuple[int, str, str, bool]:
        """(exit code, stdout, stderr, timed out) of one command in a forked child."""
        out, err = self.tmp / "stdout", self.tmp / "stderr"
        req = {"argv0": argv0, "args": args, "cwd": str(cwd), "env": env, "timeout": timeout,
               "stdout": str(out), "stderr": str(err)}  # fmt: skip
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the test fork server died")
        answer = json.loads(line)
        read = lambda p: p.read_text(errors="replace")  # noqa: E731
        return answer["rc"], read(out), read(err), answer["timed_out"]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.tmp, ignore_errors=True)


_SERVER: ForkServer | None = None
_TRIED = False


def server(python: str, env: dict[str, str]) -> ForkServer | None:
    """This test process's fork server (started on first use), or None: a subprocess per
    command, when ``VISBRICKS_TESTS_SPAWN=1`` or when the server cannot fork safely."""
    global _SERVER, _TRIED
    if os.environ.get("VISBRICKS_TESTS_SPAWN") == "1" or not sys.platform.startswith("linux"):
        return None
    if not _TRIED:
        _TRIED = True
        s = ForkServer(python, env)
        if s.ok:
            _SERVER = s
            atexit.register(s.close)
        else:
            why = "did not start" if s.threads is None else f"{s.threads} threads at the fork"
            print(f"fork server unavailable ({why}): a subprocess per command")
    return _SERVER
