"""A throwaway redis-server on a free loopback port (tests and benchmarks).

No persistence (`--save '' --appendonly no`), loopback only. `make test`, `make bench` and
`.ci/run` install Debian's redis-server when it is missing; a missing server is an error
here (tests fail, they do not skip).
"""
from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from .subprocs import die_with_parent, free_port, terminate


class RedisServerMissing(RuntimeError):
    pass


class RedisServer:
    def __init__(self, port: int | None = None, maxmemory: str | None = None, policy: str = "volatile-ttl"):
        self.port = port or free_port()
        self.maxmemory, self.policy = maxmemory, policy
        self.proc: subprocess.Popen | None = None
        self.dir = Path(tempfile.mkdtemp(prefix="dg-redis-"))

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> "RedisServer":
        exe = shutil.which("redis-server")
        if exe is None:
            raise RedisServerMissing("redis-server not found: run `make test` (it installs Debian's redis-server "
                                     "when missing) or `apt-get install -y redis-server`")
        argv = [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", str(self.dir), "--daemonize", "no", "--protected-mode", "yes",
                "--maxmemory-policy", self.policy, "--loglevel", "warning"]
        if self.maxmemory:
            argv += ["--maxmemory", self.maxmemory]
        self._log = open(self.dir / "redis.log", "w")
        self.proc = subprocess.Popen(die_with_parent(argv), stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}: "
                                   f"{(self.dir / 'redis.log').read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server not answering on 127.0.0.1:{self.port} after {timeout:.0f}s")
            time.sleep(0.05)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        terminate(self.proc)
        if getattr(self, "_log", None):
            self._log.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
