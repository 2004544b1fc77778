"""The one process harness: tests, benchmarks and demos start `distillguard serve` (and the
no-op baseline server) through it, read its ports from the port file it publishes, wait
for health SERVING over a real channel, scrape /metrics and stop it with SIGTERM.

    with start_serve("--insecure", "--port", "0", "--metrics-port", "0") as srv:
        grpc.insecure_channel(srv.target) ...
        scrape_metrics(srv.metrics_port)
    srv.returncode, srv.logs()

Also the one free-port helper (`free_port`) and the Redis launcher (`RedisServer`, from
serving.redis_server). Nothing here is imported by the serving path itself.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from .redis_server import RedisServer, RedisServerMissing   # noqa: F401  (the one Redis helper)
from .subprocs import die_with_parent, free_port, read_port_file, terminate


class ServeError(RuntimeError):
    """The server exited, or did not become ready, before its deadline."""


class ServeProcess:
    """One server process started with `--port-file`; ready once the file is there and
    grpc.health.v1 says SERVING on every port it lists.

    argv: the command without --port-file (`serve_argv(...)` builds a `distillguard serve`
    one). Output (stdout + stderr) goes to `log_path` (default: a temporary file, removed
    by stop() after its text is kept for `logs()`). credentials: channel credentials for
    the health probe of a TLS server (health needs no token). The child gets SIGTERM when
    the thread that started it ends (PR_SET_PDEATHSIG): no orphan servers after a killed
    run, but start it from a thread that outlives it."""

    def __init__(self, argv: list, *, name: str = "scorer", timeout: float = 90.0, log_path: str | Path | None = None,
                 credentials=None, **popen_kw):
        self.argv, self.name, self.timeout, self.credentials = [str(a) for a in argv], name, timeout, credentials
        self.popen_kw = {"stdin": subprocess.DEVNULL, **popen_kw}
        self._tmp = Path(tempfile.mkdtemp(prefix="dg-serve-"))
        self.port_file = self._tmp / "ports.json"
        self.log_path = Path(log_path) if log_path else self._tmp / "serve.log"
        self.proc: subprocess.Popen | None = None
        self.info: dict = {}
        self._final_logs: str | None = None

    # ---------------------------------------------------------------- start / stop

    def start(self) -> "ServeProcess":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(die_with_parent([*self.argv, "--port-file", str(self.port_file)]), stdout=log,
                                         stderr=subprocess.STDOUT, **self.popen_kw)
        try:
            self._wait_ready()
        except BaseException:
            self.stop(timeout=5)
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.timeout
        while (info := read_port_file(self.port_file)) is None:
            self._check_alive("before writing its port file")
            if time.monotonic() > deadline:
                raise ServeError(f"{self.name}: no port file after {self.timeout:.0f}s:\n{self.logs()[-3000:]}")
            time.sleep(0.05)
        self.info = info
        for port in [info["port"], *(w["port"] for w in info.get("workers") or ())]:
            while not self._health_serving(port):
                self._check_alive(f"while not SERVING on port {port}")
                if time.monotonic() > deadline:
                    raise ServeError(f"{self.name}: port {port} not SERVING after {self.timeout:.0f}s:\n"
                                     f"{self.logs()[-3000:]}")
                time.sleep(0.1)

    def _check_alive(self, when: str) -> None:
        if self.proc.poll() is not None:
            raise ServeError(f"{self.name} exited with {self.proc.returncode} {when}:\n{self.logs()[-3000:]}")

    def _health_serving(self, port: int) -> bool:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        target = f"{self.host}:{port}"
        with (grpc.secure_channel(target, self.credentials) if self.credentials is not None
              else grpc.insecure_channel(target)) as ch:
            try:
                r = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
            except grpc.RpcError:
                return False
        return r.status == health_pb2.HealthCheckResponse.SERVING

    def send_signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def kill(self) -> int:
        """SIGKILL (a crash, no drain); returns the exit code."""
        if self.proc.poll() is None:
            self.proc.kill()
        return self.wait()

    def wait(self, timeout: float | None = 60.0) -> int:
        rc = self.proc.wait(timeout)
        self._keep_logs()
        return rc

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM (drain and exit), SIGKILL if still running after `timeout` s; the exit code."""
        terminate(self.proc, timeout)
        self._keep_logs()
        return self.returncode

    def _keep_logs(self) -> None:
        if self._final_logs is None and self.proc is not None and self.proc.poll() is not None:
            self._final_logs = self._read_log()
            shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> "ServeProcess":
        return self if self.proc is not None else self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---------------------------------------------------------------- what it tells

    @property
    def host(self) -> str:
        h = self.info.get("host") or "127.0.0.1"
        h = {"0.0.0.0": "127.0.0.1", "::": "::1", "[::]": "::1"}.get(h, h)
        return f"[{h}]" if ":" in h and not h.startswith("[") else h

    @property
    def port(self) -> int:
        return self.info["port"]

    @property
    def metrics_port(self) -> int | None:
        return self.info.get("metrics_port")

    @property
    def workers(self) -> list[dict]:
        """[{"index", "pid", "port" (own), "metrics_port"}] under `serve --workers N`, else []."""
        return list(self.info.get("workers") or ())

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return self.proc.poll() if self.proc is not None else None

    def logs(self) -> str:
        """Everything the process wrote to stdout and stderr so far."""
        return self._final_logs if self._final_logs is not None else self._read_log()

    def _read_log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def metrics(self) -> "MetricSamples":
        """/metrics now (summed over the workers under --workers); empty when it has none
        or does not answer."""
        ports = [w["metrics_port"] for w in self.workers if w.get("metrics_port")] or \
            ([self.metrics_port] if self.metrics_port else [])
        out = []
        for p in ports:
            try:
                out.append(scrape_metrics(p, host=self.host))
            except OSError:
                pass
        return MetricSamples.sum(out)


def serve_argv(*args, cli_args: tuple = ()) -> list[str]:
    """`python -m distillguard.cli [CLI_ARGS] serve ARGS`."""
    return [sys.executable, "-m", "distillguard.cli", *map(str, cli_args), "serve", *map(str, args)]


def start_serve(*args, cli_args: tuple = (), timeout: float = 90.0, **kw) -> ServeProcess:
    """`distillguard [CLI_ARGS] serve ARGS` started and ready (see ServeProcess for kw)."""
    return ServeProcess(serve_argv(*args, cli_args=cli_args), timeout=timeout, **kw).start()


# -------------------------------------------------------------------- /metrics

class MetricSamples(dict):
    """One /metrics scrape: {'name{label="v",...}': value} (labels sorted, so keys read like
    the exposition text and survive json.dumps), with each key's (name, labels) kept for
    lookups by label."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.parsed: dict[str, tuple[str, dict]] = {}

    def add(self, name: str, labels: dict, value: float) -> None:
        key = name + ("{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}" if labels else "")
        self[key] = self.get(key, 0.0) + value
        self.parsed[key] = (name, dict(labels))

    def samples(self, name: str, **labels) -> list[tuple[dict, float]]:
        """(labels, value) of every sample called `name` whose labels include `labels`."""
        return [(lab, self[k]) for k, (n, lab) in self.parsed.items()
                if n == name and all(lab.get(a) == str(b) for a, b in labels.items())]

    def value(self, name: str, **labels) -> float:
        """Sum of the samples `samples(name, **labels)` selects; 0.0 when none."""
        return float(sum(v for _, v in self.samples(name, **labels)))

    @classmethod
    def sum(cls, scrapes: list["MetricSamples"]) -> "MetricSamples":
        out = cls()
        for s in scrapes:
            for k, v in s.items():
                name, labels = s.parsed[k]
                out.add(name, labels, v)
        return out


def parse_metrics(text: str) -> MetricSamples:
    """Prometheus text exposition -> MetricSamples, through prometheus_client's parser."""
    from prometheus_client.parser import text_string_to_metric_families

    out = MetricSamples()
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.add(s.name, s.labels, float(s.value))
    return out


def scrape_metrics(port: int, host: str = "127.0.0.1", timeout: float = 10.0) -> MetricSamples:
    """GET http://HOST:PORT/metrics, parsed (OSError when nothing answers)."""
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=timeout) as r:
        return parse_metrics(r.read().decode())


__all__ = ["MetricSamples", "RedisServer", "RedisServerMissing", "ServeError", "ServeProcess", "free_port",
           "parse_metrics", "scrape_metrics", "serve_argv", "start_serve"]
