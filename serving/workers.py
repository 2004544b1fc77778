"""`serve --workers N`: N scorer processes sharing one port (SO_REUSEPORT).

The parent forks the workers before anything of gRPC, onnxruntime or numba exists in it
(gRPC's core does not survive a fork once it runs, and each worker must build its own
onnxruntime session), then only supervises: it forwards SIGTERM/SIGINT (drain and stop)
and SIGHUP (reload) to every worker, restarts a worker that dies while serving, and exits
0 once every worker has exited 0 after a stop.

Each worker binds the shared port with SO_REUSEPORT — the kernel spreads *connections*
(not requests) over the workers' listening sockets — and also a port of its own, printed
in its start line, so a test or a session-affine balancer can aim at one worker. With
port 0 the parent reserves a free port first: a bound, non-listening SO_REUSEPORT socket
that keeps the port while the workers bind it and receives no connection itself.

Workers share session state only through a shared store (`--state redis://...`). With the
in-process store each worker holds its own sessions: a session's requests must then reach
the same worker every time (route by session id to the workers' own ports).
"""
from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys
import time
from typing import Callable

from .subprocs import read_port_file, worker_port_file, write_port_file

log = logging.getLogger("distillguard.workers")

RESTART_DELAY_S = 1.0
EARLY_EXIT_S = 10.0     # a worker dying this soon after its start is a configuration error: stop all


def reserve_port(host: str) -> tuple[socket.socket, int]:
    """A free port held by a bound, non-listening SO_REUSEPORT socket."""
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind((host.strip("[]"), 0))
    return s, s.getsockname()[1]


def run_workers(n: int, host: str, port: int, child: Callable[[int, int], int],
                port_file: str | None = None) -> int:
    """Fork n workers running child(index, shared_port) -> exit code; supervise them.
    port_file: each child writes subprocs.worker_port_file(port_file, index) once SERVING;
    when all n have, the supervisor publishes the port file (serving.subprocs), again after
    a restarted worker is back."""
    if n < 1:
        raise ValueError(f"--workers must be >= 1, got {n}")
    if any(m == "grpc" or m.startswith("grpc.") for m in sys.modules):
        log.warning("gRPC was imported before forking the workers")
    reserved = None
    if port == 0:
        reserved, port = reserve_port(host)
    children: dict[int, tuple[int, float]] = {}     # pid -> (index, started at)
    stopping = False
    codes: dict[int, int] = {}

    def spawn(i: int) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:    # the worker
            code = 1
            try:
                if reserved is not None:
                    reserved.close()
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                    signal.signal(sig, signal.SIG_DFL)
                code = child(i, port)
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 1
            except BaseException:
                logging.getLogger("distillguard.workers").exception("worker %d failed", i)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        children[pid] = (i, time.monotonic())

    def forward(sig, _frame=None):
        nonlocal stopping
        if sig in (signal.SIGTERM, signal.SIGINT):
            stopping = True
        for pid in list(children):
            try:
                os.kill(pid, signal.SIGTERM if sig == signal.SIGINT else sig)
            except ProcessLookupError:
                pass

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    log.info(json.dumps({"event": "workers", "n": n, "port": port, "pid": os.getpid()}))
    print(f"distillguard supervisor pid {os.getpid()}: {n} workers on {host}:{port}", flush=True)
    for i in range(n):
        spawn(i)
    failed = False
    ready: dict[int, dict] = {}     # index -> its port-file entry
    pending = port_file is not None

    def gather() -> bool:
        for i in range(n):
            if i not in ready and (entry := read_port_file(worker_port_file(port_file, i))) is not None:
                ready[i] = entry
                worker_port_file(port_file, i).unlink(missing_ok=True)
        if len(ready) < n:
            return False
        write_port_file(port_file, {"pid": os.getpid(), "host": host, "port": port, "metrics_port": None,
                                    "workers": [ready[i] for i in range(n)]})
        return True

    while children:
        try:
            # Until every worker has announced itself, poll (WNOHANG) between looks at their files.
            pid, status = os.waitpid(-1, os.WNOHANG if pending else 0)
        except ChildProcessError:
            break
        if pid == 0:
            pending = not stopping and not gather()
            if pending:
                time.sleep(0.05)
            continue
        if pid not in children:
            continue
        i, started = children.pop(pid)
        ready.pop(i, None)
        code = os.waitstatus_to_exitcode(status)
        codes[i] = code
        if stopping:
            continue
        if time.monotonic() - started < EARLY_EXIT_S:
            log.error(json.dumps({"event": "worker_failed_at_start", "worker": i, "code": code}))
            failed = True
            forward(signal.SIGTERM)
            continue
        log.error(json.dumps({"event": "worker_died", "worker": i, "code": code, "restart_in_s": RESTART_DELAY_S}))
        time.sleep(RESTART_DELAY_S)
        if not stopping:
            if port_file is not None:
                worker_port_file(port_file, i).unlink(missing_ok=True)
                pending = True
            spawn(i)
    if reserved is not None:
        reserved.close()
    ok = not failed and all(c == 0 for c in codes.values())
    log.info(json.dumps({"event": "workers_stopped", "codes": codes}))
    return 0 if ok else 1
