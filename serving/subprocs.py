"""Child processes the benchmarks and test helpers start (scorer, no-op server, redis-server),
and the port file a `serve --port-file PATH` process publishes once it is ready.

Port file (JSON, written by temp + rename, so a reader sees all of it or nothing):
    {"pid": P, "host": H, "port": GRPC_PORT, "metrics_port": PORT or null, "workers": null}
With `serve --workers N`, pid is the supervisor's (the one to signal) and port the shared
one; each worker is listed once it says SERVING on its own port:
    "workers": [{"index": i, "pid": P_i, "port": OWN_PORT_i, "metrics_port": PORT or null}, ...]
"""
from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

from ..model.files import publish_atomically


def terminate(proc: subprocess.Popen | None, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `timeout` s; reaps it either way."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (bound then released: another process may take
    it before the caller binds it, so prefer `--port 0` plus the port file where possible)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


# Runs in a small Python process that then exec()s the real command (same pid, so Popen's
# handle is the server's): PR_SET_PDEATHSIG survives execve. Done this way and not in
# Popen's preexec_fn because a preexec_fn forces a real fork(), which runs gRPC's
# pthread_atfork handlers; with gRPC threads alive in the parent (every test process has
# some) those can wait forever (grpc/grpc#17986, #37259: Popen hangs). Without a
# preexec_fn CPython spawns with vfork and no atfork handler runs. argv[1] is the parent's
# pid: a parent that died before prctl took effect would never send the signal.
_DIE_WITH_PARENT = (
    "import ctypes, os, signal, sys\n"
    "try:\n"
    "    ctypes.CDLL('libc.so.6', use_errno=True).prctl(1, signal.SIGTERM)\n"   # PR_SET_PDEATHSIG
    "except (OSError, AttributeError):\n"
    "    pass\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit(0)\n"
    "os.execvp(sys.argv[2], sys.argv[2:])\n")


def die_with_parent(argv: list) -> list:
    """`argv` wrapped so that the child gets SIGTERM when the thread that started it ends
    (no orphan servers after a killed test run). Linux only; elsewhere it just runs argv."""
    import os
    import sys

    return [sys.executable, "-S", "-c", _DIE_WITH_PARENT, str(os.getpid()), *[str(a) for a in argv]]


def write_port_file(path: str | Path, info: dict) -> None:
    publish_atomically(path, lambda tmp: Path(tmp).write_text(json.dumps(info) + "\n"), best_effort_dir=True)


def read_port_file(path: str | Path) -> dict | None:
    """The port file's content, None while it does not exist yet."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None


def worker_port_file(path: str | Path, index: int) -> Path:
    """Where worker `index` of `serve --workers N --port-file PATH` announces itself to the
    supervisor (a hidden name beside PATH; the supervisor removes it once read)."""
    path = Path(path)
    return path.with_name(f".{path.name}.worker-{index}")
