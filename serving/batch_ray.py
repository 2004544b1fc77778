"""Ray engine of batch scoring (`distillguard score --engine ray [--address ADDR]`).

The driver (this process) reads and normalises the input and writes it as Parquet
partitioned by account hash (`partitions.partition_events`, the step the local engine uses to
spill; Ray Data's own groupby was ~50x slower than pyarrow here). A Ray Data dataset of
partition paths goes through `map_batches` on a fixed pool of actors, one partition per
call; each actor builds one onnxruntime session (sessions cannot be pickled) and calls
`partitions.score_sessions`, the local engine's per-partition function. The pipeline starts
before the partitions are written, so the actors' start-up (process, imports, session)
overlaps the driver's partition pass; the actors wait for a READY marker beside the
partitions (ABORT, if the driver gives up, releases them). The driver streams the
output tables back, in partition order, into the local engine's writer: same rows,
same file, by construction.

On a multi-node cluster every node must read the partitions: give `spill_dir` on shared
storage (an NFS path, or a URI such as s3://bucket/tmp that pyarrow can open). The model
bundle travels to the actors through Ray, so it need not be on the nodes; distillguard
and its dependencies must be installed there (the same version as the driver's).
"""
from __future__ import annotations

import logging
import os
import queue
import shutil
import socket
import sys
import tempfile
import threading
import time
import uuid
import warnings
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from .partitions import partition_events, partition_fs, partition_path, read_partition, score_sessions
from .bundle import Bundle, load_bundle

PARTS_PER_ACTOR = 4                  # partitions per actor: load balance vs per-call overhead
LOCAL_OBJECT_STORE_MB = int(os.environ.get("DISTILLGUARD_RAY_OBJECT_STORE_MB", "512"))
CONNECT_TIMEOUT_S = 5.0
# Quiet Ray (no usage-stats prompt or upload, no import-time warnings), and no implicit
# ray.init() from Ray Data calls (this module connects explicitly; a pipeline cut off by
# shutdown must not start a new instance). Set before importing ray; the caller's own
# settings win.
_RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_DISABLE_IMPORT_WARNING": "1",
            "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0", "RAY_DEDUP_LOGS": "1", "RAY_ENABLE_AUTO_CONNECT": "0"}


class RayEngineError(RuntimeError):
    """Ray is missing, the cluster cannot be reached, or it cannot read the partitions."""


def import_ray():
    for k, v in _RAY_ENV.items():
        os.environ.setdefault(k, v)
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise RayEngineError("--engine ray needs Ray Data, which is not installed here: "
                             "pip install 'distillguard[ray]' (ray[data]==2.60.0)") from e
    return ray


def _host_port(address: str) -> tuple[str, int] | None:
    """HOST:PORT of a Ray address (plain GCS address or ray://client address); None for 'auto'."""
    a = address.strip()
    if a in ("auto", "local", ""):
        return None
    if "://" in a:
        a = a.split("://", 1)[1]
    a = a.rstrip("/")
    host, sep, port = a.rpartition(":")
    if not sep or not port.isdigit():
        raise RayEngineError(f"Ray address {address!r}: expected HOST:PORT (the head's GCS port, 6379 by "
                             "default), ray://HOST:PORT (Ray Client, 10001) or 'auto'")
    return host.strip("[]"), int(port)


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Fail fast with a clear message: ray.init would retry an unreachable GCS for a minute."""
    hp = _host_port(address)
    if hp is None:
        return
    try:
        with socket.create_connection(hp, timeout=timeout):
            pass
    except OSError as e:
        raise RayEngineError(
            f"cannot reach a Ray cluster at {address}: {e.strerror or e}. Start one with "
            f"`ray start --head` on the head node and give its address (HOST:6379, or ray://HOST:10001 "
            f"for Ray Client), or leave --address out to start a local Ray instance") from e


def connect(address: str | None, num_cpus: int, progress: bool) -> bool:
    """Join the cluster at `address`, or start a local instance; True when started here.

    A Ray connection already open in this process (a notebook, a test fixture) is used
    as it is."""
    ray = import_ray()
    if address:
        check_reachable(address)
    if ray.is_initialized():
        return False
    kw = dict(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=True)
    try:
        if address:
            ray.init(address=address, **kw)
        else:
            # A local instance keeps Ray's default (token auth on) without warning about it.
            logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
            ray.init(num_cpus=num_cpus, object_store_memory=LOCAL_OBJECT_STORE_MB * 2**20, **kw)
    except Exception as e:   # ConnectionError, version mismatch, RuntimeError...
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        raise RayEngineError(f"cannot start or join {where}: {e}") from e
    if progress:
        cpus = int(ray.cluster_resources().get("CPU", 0))
        nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
        what = f"joined the Ray cluster at {address}" if address else "started a local Ray instance"
        print(f"ray: {what} ({nodes} node{'s' * (nodes != 1)}, {cpus} CPUs)", file=sys.stderr)
    return True


READY, ABORT = "_READY", "_ABORT"     # markers the driver writes beside the partitions


def _mark(out_dir: str, name: str) -> None:
    fs, root = partition_fs(out_dir)
    fs.open_output_stream(f"{root}/{name}").close()


def _wait_for_partitions(out_dir: str) -> bool:
    """Block until the driver has written every partition (True) or gave up (False)."""
    import pyarrow.fs as pafs

    fs, root = partition_fs(out_dir)
    pause = 0.5 if "://" in out_dir else 0.02
    while True:
        info = {i.base_name: i.type for i in fs.get_file_info([f"{root}/{READY}", f"{root}/{ABORT}"])}
        if info[ABORT] != pafs.FileType.NotFound:
            return False
        if info[READY] != pafs.FileType.NotFound:
            return True
        time.sleep(pause)


class PartitionScorer:
    """Ray Data actor: one onnxruntime session, built once; scores whole partitions.

    Actors start while the driver still writes the partitions (their start-up, seconds
    of process and import time, overlaps the partition pass); each call first waits for
    the driver's READY marker. A partition with no events has no file: empty output."""

    def __init__(self, bundle_ref: list, per_event: bool, out_dir: str):
        import ray

        # The bundle's bytes come by reference, nested in a list: an argument Ray would put in
        # the object store itself makes every actor warn that a restart could lose it.
        bundle_files = ray.get(bundle_ref[0])
        d = tempfile.mkdtemp(prefix="distillguard-bundle-")
        try:
            for name, data in bundle_files.items():
                Path(d, name).write_bytes(data)
            # One intra-op thread: the pool's parallelism is its actors, one CPU each.
            self.bundle = load_bundle(d, threads=1)
        finally:
            shutil.rmtree(d, ignore_errors=True)   # the session holds the model in memory
        self.per_event = per_event
        self.out_dir = out_dir
        self.ready = False

    def __call__(self, batch: pa.Table) -> pa.Table:
        import pyarrow.fs as pafs

        if not self.ready:
            if not _wait_for_partitions(self.out_dir):
                return pa.table({})
            self.ready = True
        outs = []
        for path in batch.column("path").to_pylist():
            fs, p = partition_fs(path)
            if fs.get_file_info(p).type != pafs.FileType.NotFound:
                outs.append(score_sessions(self.bundle, read_partition(path), per_event=self.per_event))
        return pa.concat_tables(outs) if outs else pa.table({})


def _bundle_files(bundle: Bundle) -> dict[str, bytes]:
    return {name: (bundle.path / name).read_bytes() for name in ("metadata.json", "model.onnx")}


def _events_of(out: pa.Table, per_event: bool) -> int:
    return len(out) if per_event else int(pc.sum(out["n_events"]).as_py() or 0)


class _Drain(threading.Thread):
    """Runs the Ray Data pipeline from the start and queues its output blocks for the driver."""

    def __init__(self, dataset):
        super().__init__(name="distillguard-ray-drain", daemon=True)
        self.dataset = dataset
        self.q: queue.Queue = queue.Queue()
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.done = False
        self.cleanup_root: str | None = None   # partitions to remove when the pipeline ends

    def run(self):
        try:
            for out in self.dataset.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=1):
                if self.stop.is_set():
                    break
                self.q.put(("out", out))
        except BaseException as e:   # an actor's error: the driver re-raises it
            if not self.stop.is_set():
                self.q.put(("err", e))
        finally:
            self.q.put(("end", None))
            with self.lock:
                self.done, root = True, self.cleanup_root
            if root:
                _remove_partitions(root)

    def hand_over_cleanup(self, root: str) -> None:
        """Remove `root` when the pipeline has ended (now, if it has)."""
        with self.lock:
            if not self.done:
                self.cleanup_root = root
                return
        _remove_partitions(root)

    def __iter__(self):
        while True:
            kind, val = self.q.get()
            if kind == "end":
                return
            if kind == "err":
                raise val
            yield val


def _make_spill_root(spill_dir: str | None) -> str:
    if not spill_dir:
        return tempfile.mkdtemp(prefix="distillguard-ray-")
    if "://" in spill_dir:
        root = f"{spill_dir.rstrip('/')}/distillguard-{uuid.uuid4().hex}"
        fs, path = partition_fs(root)
        fs.create_dir(path)
        return root
    root = Path(spill_dir).resolve() / f"distillguard-{uuid.uuid4().hex}"
    root.mkdir(parents=True)
    return str(root)


def ray_outputs(bundle: Bundle, input_path: Path, per_event: bool, load_opts: dict, n_parts: int, bar, stats,
                address: str | None = None, actors: int = 0, spill_dir: str | None = None,
                progress: bool = True):
    """The Ray engine: yield (events, output table) per partition, in partition order."""
    t0 = time.perf_counter()
    started = connect(address, num_cpus=actors or os.cpu_count() or 1, progress=progress)
    ray = import_ray()
    fs_root = drain = None
    try:
        stats.startup_s = time.perf_counter() - t0
        cpus = int(ray.cluster_resources().get("CPU", 1))
        n_actors = max(1, actors or cpus)
        nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
        client = (address or "").strip().startswith("ray://")   # this process is not on a cluster node
        if (nodes > 1 or client) and not spill_dir:
            where = "is reached through Ray Client" if client else f"has {nodes} nodes"
            raise RayEngineError(
                f"the Ray cluster {where}: give --spill-dir on storage every node can read "
                f"(an NFS path, or a URI such as s3://bucket/prefix), where the account-hash partitions go")
        fs_root = _make_spill_root(spill_dir)
        n = max(n_parts, PARTS_PER_ACTOR * n_actors)
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False          # the caller's bar counts events
        ctx.print_on_execution_start = False
        ctx.execution_options.preserve_order = True
        # Ray Data logs each execution at INFO and warns once that its bars are off (on purpose).
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
        # Actor restarts (Ray Data's default) survive a lost node; a local instance has no node
        # to lose, and restartable actors log an error-level line each about their arguments.
        restarts = {} if address else {"max_restarts": 0}
        ds = ray.data.from_items([{"path": partition_path(fs_root, p, "parquet")} for p in range(n)],
                                 override_num_blocks=n)
        with warnings.catch_warnings():
            # max_restarts has no named parameter in Ray 2.60; the **kwargs form warns of 2.64.
            warnings.filterwarnings("ignore", message=".*ray_remote_args.*is deprecated")
            scored = ds.map_batches(PartitionScorer, fn_constructor_args=([ray.put(_bundle_files(bundle))],
                                                                          per_event, fs_root),
                                    batch_size=1, batch_format="pyarrow", num_cpus=1,
                                    compute=ray.data.ActorPoolStrategy(size=min(n_actors, n)), **restarts)
        drain = _Drain(scored)
        drain.start()   # actors start now, while this process writes the partitions
        t1 = time.perf_counter()
        written = partition_events(input_path, fs_root, n, load_opts, bar, fmt="parquet")
        _mark(fs_root, READY)
        if progress:
            print(f"ray: {len(written)} account-hash partitions written in {time.perf_counter() - t1:.1f}s; "
                  f"scoring them on {min(n_actors, n)} actors", file=sys.stderr)
        for out in drain:
            if len(out):
                yield _events_of(out, per_event), out
    finally:
        if drain is not None and drain.is_alive():
            # Stopped early (bad input, Ctrl-C, a write error): actors still starting or waiting
            # for the partitions must not hold this process up.
            drain.stop.set()
            try:
                _mark(fs_root, ABORT)   # waiting actors return at once
            except OSError:
                pass
            if started:   # our own instance: stop it, actors and all
                data_log = logging.getLogger("ray.data")
                level, data_log.level = data_log.level, logging.CRITICAL + 1   # its pipeline, cut off, says so
                ray.shutdown()
                started = False
                drain.join(timeout=10)
                data_log.setLevel(level)
            else:         # a cluster we joined: the pipeline drains by itself, then removes the partitions
                drain.hand_over_cleanup(fs_root)
                fs_root = None
        if fs_root is not None:
            _remove_partitions(fs_root)
        if started:
            ray.shutdown()


def _remove_partitions(root: str) -> None:
    if "://" in root:
        try:
            import pyarrow.fs as pafs

            fs, path = pafs.FileSystem.from_uri(root)
            fs.delete_dir(path)
        except Exception as e:   # leave a note, never mask the run's own outcome
            print(f"ray: could not remove partitions under {root}: {e}", file=sys.stderr)
    else:
        shutil.rmtree(root, ignore_errors=True)
