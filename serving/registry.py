"""Model registry: versioned bundle copies, `current` and `shadow` pointers, history.

Layout of a registry directory REG:

    versions/v0001/        model.onnx + metadata.json, read-only copies; a name is never reused
    versions/v0002/ ...
    current -> versions/v0002     symlink: the model `serve --model REG` serves
    shadow  -> versions/v0003     optional symlink: scored alongside, never enforced
    history.jsonl                 one JSON object per pointer change (promote, force, rollback, shadow)
    comparisons/                  champion-vs-challenger reports computed by `promote --events/--labels`
    .lock                         fcntl.flock: one writer at a time

A pointer is swapped atomically: a new symlink under a temporary name, then published
over the old one (`model.files.publish`: rename, directory fsync), so a reader (the server's watcher, another host on shared storage)
sees the old target or the new one, never a missing or half-written pointer. Versions
are immutable once added, so a reader that resolved `current` to `versions/v0002` can
load it at leisure. Writers (promote, rollback, shadow changes) hold an exclusive
flock on REG/.lock, so two promotions cannot interleave their check and their swap.

`RegistryWatcher` is the serving side: a thread that polls the pointers and hands a
changed target to the scorer's reload path. This module imports neither gRPC nor
onnxruntime beyond `load_bundle`, so the CLI can manage a registry cheaply.
"""
from __future__ import annotations

import errno
import fcntl
import getpass
import hashlib
import json
import logging
import os
import re
import shutil
import threading
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from ..model.files import fsync_dir, publish

log = logging.getLogger("distillguard.registry")

BUNDLE_FILES = ("model.onnx", "metadata.json")
POINTERS = ("current", "shadow")
ACTIONS = ("promote", "force", "rollback", "shadow")
_NAME = re.compile(r"^v(\d{4,})$")


class RegistryError(ValueError):
    """A registry operation that cannot be done; the message says why and what to run."""


def is_registry(path: str | os.PathLike) -> bool:
    """A directory with `versions/` is a registry (what `serve --model` and `evaluate
    --baseline` check before treating a path as a plain bundle)."""
    return (Path(path) / "versions").is_dir()


def bundle_hashes(path: str | os.PathLike) -> dict:
    """sha256 of a bundle's model.onnx and metadata.json, and `bundle`: one hash over both.

    Both files count: the same weights with other thresholds or policy act differently,
    so they are a different version."""
    path = Path(path)
    out = {}
    for name in BUNDLE_FILES:
        h = hashlib.sha256()
        try:
            with open(path / name, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
        except FileNotFoundError:
            raise RegistryError(f"model bundle {path}: missing {name}") from None
        out[name] = h.hexdigest()
    out["bundle"] = hashlib.sha256("".join(f"{n}:{out[n]}\n" for n in BUNDLE_FILES).encode()).hexdigest()
    return out


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _user() -> str:
    try:
        return os.environ.get("USER") or getpass.getuser()
    except Exception:       # no passwd entry (containers): still record something
        return f"uid:{os.getuid()}"


@dataclass
class VersionInfo:
    name: str
    path: str
    model_version: str
    created_at: str | None       # when the bundle was trained (its metadata)
    sha256: str                  # bundle_hashes(...)["bundle"]
    current: bool
    shadow: bool


class Registry:
    """A registry directory (see the module docstring). `Registry(path)` opens an
    existing one; `Registry.init(path)` creates one."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        if not is_registry(self.root):
            raise RegistryError(f"{self.root} is not a model registry (no versions/ directory); create one with "
                                f"`distillguard registry --registry {self.root} --init`")
        self.versions_dir = self.root / "versions"
        self.history_path = self.root / "history.jsonl"
        # flock is per open file: a second flock from this process on a new descriptor
        # would wait for itself, so nested `lock()` calls share one descriptor.
        self._tlock = threading.RLock()
        self._depth = 0
        self._fd: int | None = None

    @classmethod
    def init(cls, root: str | os.PathLike) -> "Registry":
        """Create an empty registry (idempotent on an existing one); a non-empty
        directory that is not a registry is refused, so a typo cannot bury other files."""
        root = Path(root)
        if root.exists() and not root.is_dir():
            raise RegistryError(f"{root} exists and is not a directory")
        if root.is_dir() and not is_registry(root) and any(root.iterdir()):
            raise RegistryError(f"{root} is a non-empty directory that is not a registry; choose a new path")
        (root / "versions").mkdir(parents=True, exist_ok=True)
        (root / "history.jsonl").touch(exist_ok=True)
        return cls(root)

    # ------------------------------------------------------------------ locking
    @contextmanager
    def lock(self):
        """Exclusive writer lock on REG/.lock (other processes wait; re-entrant here)."""
        with self._tlock:
            if self._depth == 0:
                fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                except BaseException:
                    os.close(fd)
                    raise
                self._fd = fd
            self._depth += 1
            try:
                yield self
            finally:
                self._depth -= 1
                if self._depth == 0:
                    fd, self._fd = self._fd, None
                    fcntl.flock(fd, fcntl.LOCK_UN)
                    os.close(fd)

    # ------------------------------------------------------------------ versions
    def versions(self) -> list[str]:
        """Version names in order of addition (v0001, v0002, ...)."""
        names = [p.name for p in self.versions_dir.iterdir() if _NAME.match(p.name) and p.is_dir()]
        return sorted(names, key=lambda n: int(_NAME.match(n).group(1)))

    def path_of(self, name: str) -> Path:
        p = self.versions_dir / name
        if not _NAME.match(name) or not p.is_dir():
            raise RegistryError(f"{self.root}: no version {name!r} (versions: {', '.join(self.versions()) or 'none'})")
        return p

    def find(self, bundle: str | os.PathLike) -> str | None:
        """The version holding exactly this bundle's files, if any."""
        want = bundle_hashes(bundle)["bundle"]
        for name in self.versions():
            if bundle_hashes(self.versions_dir / name)["bundle"] == want:
                return name
        return None

    def add(self, bundle: str | os.PathLike) -> str:
        """Copy a bundle in as the next version and return its name; the same files
        already present return that version's name instead. A bundle that does not
        load (`load_bundle`: missing files, other feature spec, corrupt graph) is refused."""
        from .bundle import load_bundle

        bundle = Path(bundle)
        load_bundle(bundle)        # raises BundleError naming what is wrong
        with self.lock():
            same = self.find(bundle)
            if same is not None:
                return same
            names = self.versions()
            n = int(_NAME.match(names[-1]).group(1)) + 1 if names else 1
            name = f"v{n:04d}"
            tmp = self.versions_dir / f".incoming-{name}-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            for f in BUNDLE_FILES:
                shutil.copyfile(bundle / f, tmp / f)
                with open(tmp / f, "rb") as fh:
                    os.fsync(fh.fileno())
                os.chmod(tmp / f, 0o444)      # versions are immutable: a served model never changes under it
            if bundle_hashes(tmp)["bundle"] != bundle_hashes(bundle)["bundle"]:
                shutil.rmtree(tmp, ignore_errors=True)
                raise RegistryError(f"{bundle} changed while it was being copied into {self.root}; try again")
            # The new directory's entries, the rename and versions/ itself are all synced.
            publish(tmp, self.versions_dir / name)
            log.info(json.dumps({"event": "registry_add", "registry": str(self.root), "version": name,
                                 "source": str(bundle)}))
            return name

    def info(self, name: str) -> VersionInfo:
        p = self.path_of(name)
        meta = json.loads((p / "metadata.json").read_text())
        return VersionInfo(name=name, path=str(p), model_version=str(meta.get("version", "unknown")),
                           created_at=meta.get("created_at"), sha256=bundle_hashes(p)["bundle"],
                           current=self.current() == name, shadow=self.shadow() == name)

    def list(self) -> list[VersionInfo]:
        return [self.info(n) for n in self.versions()]

    # ------------------------------------------------------------------ pointers
    def pointer(self, which: str) -> str | None:
        """The version a pointer names, or None when it is unset."""
        if which not in POINTERS:
            raise ValueError(f"pointer must be one of {POINTERS}, got {which!r}")
        try:
            target = os.readlink(self.root / which)
        except FileNotFoundError:
            return None
        except OSError as e:
            if e.errno == errno.EINVAL:
                raise RegistryError(f"{self.root / which} is not a symlink; the registry is damaged") from None
            raise
        name = Path(target).name
        if not _NAME.match(name) or not (self.versions_dir / name).is_dir():
            raise RegistryError(f"{self.root / which} -> {target}: no such version in {self.versions_dir}")
        return name

    def current(self) -> str | None:
        return self.pointer("current")

    def shadow(self) -> str | None:
        return self.pointer("shadow")

    def current_path(self) -> Path:
        name = self.current()
        if name is None:
            raise RegistryError(f"registry {self.root} has no current version yet; promote one with "
                                f"`distillguard promote --registry {self.root} --bundle BUNDLE`")
        return self.versions_dir / name

    def shadow_path(self) -> Path | None:
        name = self.shadow()
        return None if name is None else self.versions_dir / name

    def _point(self, which: str, name: str | None) -> None:
        link = self.root / which
        if name is None:
            link.unlink(missing_ok=True)
            fsync_dir(self.root)
            return
        tmp = self.root / f".{which}.tmp-{os.getpid()}-{threading.get_ident()}"
        tmp.unlink(missing_ok=True)
        os.symlink(f"versions/{name}", tmp)     # relative: the registry can be moved or mounted elsewhere
        publish(tmp, link)

    # ------------------------------------------------------------------ history
    def history(self) -> list[dict]:
        """Entries oldest first. A last line cut short by a crash is skipped with a
        warning; a broken line elsewhere is an error (rollback depends on the history)."""
        try:
            text = self.history_path.read_text()
        except FileNotFoundError:
            return []
        lines = text.split("\n")
        out = []
        for i, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as e:
                if i == len(lines):     # no newline after it: an append interrupted mid-write
                    log.warning("%s: line %d is incomplete, ignored", self.history_path, i)
                    continue
                raise RegistryError(f"{self.history_path}: line {i} is not valid JSON ({e})") from None
        return out

    def _record(self, action: str, frm: str | None, to: str | None, *, pointer: str = "current",
                comparison: dict | None = None, forced: bool = False, note: str | None = None) -> dict:
        entry = {"time": _now(), "action": action, "pointer": pointer, "from": frm, "to": to,
                 "bundle_version": self.info(to).model_version if to else None,
                 "comparison": comparison, "forced": forced, "user": _user(), "note": note}
        line = (json.dumps(entry, sort_keys=True) + "\n").encode()
        # One write with O_APPEND: concurrent readers see whole lines (writers hold the lock).
        fd = os.open(self.history_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        log.info(json.dumps({"event": "registry_" + action, "registry": str(self.root), **{
            k: entry[k] for k in ("pointer", "from", "to", "bundle_version", "forced", "user")}}))
        return entry

    # ------------------------------------------------------------------ changes
    def set_current(self, name: str, *, action: str = "promote", comparison: dict | None = None,
                    forced: bool = False, note: str | None = None) -> dict:
        """Point `current` at version `name` and record it; returns the history entry.
        action: "promote", or "force" for a promotion past a refusing gate (forced=True)."""
        if action not in ("promote", "force"):
            raise ValueError(f"set_current action must be promote or force, got {action!r}")
        with self.lock():
            self.path_of(name)
            frm = self.current()
            self._point("current", name)
            entry = self._record(action, frm, name, comparison=comparison, forced=forced or action == "force",
                                 note=note)
            if self.shadow() == name:
                # The shadow was promoted: scoring the served model twice would compare it with itself.
                self._point("shadow", None)
                self._record("shadow", name, None, pointer="shadow", note=f"cleared: {name} promoted to current")
            return entry

    def set_shadow(self, name: str | None, note: str | None = None) -> dict:
        """Point `shadow` at version `name` (None: remove it) and record it."""
        with self.lock():
            if name is not None:
                self.path_of(name)
            frm = self.shadow()
            self._point("shadow", name)
            return self._record("shadow", frm, name, pointer="shadow", note=note)

    def clear_shadow(self, note: str | None = None) -> dict:
        return self.set_shadow(None, note=note)

    def rollback_stack(self) -> list[str]:
        """Versions a rollback returns to, most recent last: every promotion pushes the
        version it replaced, every rollback pops one."""
        stack: list[str] = []
        for e in self.history():
            if e.get("pointer", "current") != "current":
                continue
            if e.get("action") in ("promote", "force") and e.get("from"):
                stack.append(e["from"])
            elif e.get("action") == "rollback" and stack:
                stack.pop()
        return stack

    def rollback(self, note: str | None = None) -> dict:
        """Point `current` back at the version that was current before the latest
        promotion not yet rolled back; repeated calls walk further back."""
        with self.lock():
            stack = self.rollback_stack()
            if not stack:
                cur = self.current()
                raise RegistryError(f"registry {self.root}: nothing to roll back to (current is "
                                    f"{cur or 'unset'} and no earlier promotion remains in history.jsonl)")
            target = stack[-1]
            self.path_of(target)
            frm = self.current()
            self._point("current", target)
            return self._record("rollback", frm, target, note=note)


# ---------------------------------------------------------------------- serving side


class RegistryWatcher:
    """Polls a registry's pointers and applies changes to a running scorer.

    on_current(path) must load and swap the served bundle or raise, keeping the old one
    (`server.reload_model`); on_shadow(path | None) the same for the shadow model
    (`Scorer.set_shadow`). A target that was refused is not retried until its pointer
    changes again: versions are immutable, so retrying would fail the same way and only
    repeat the error every poll. One lock serialises polls, SIGHUP and the Reload RPC."""

    def __init__(self, registry: Registry, on_current: Callable, on_shadow: Callable | None,
                 poll_s: float = 2.0, current: str | None = None, shadow: str | None = None):
        if poll_s <= 0:
            raise ValueError(f"--registry-poll-s must be > 0, got {poll_s}")
        self.registry, self.on_current, self.on_shadow, self.poll_s = registry, on_current, on_shadow, poll_s
        self.applied = {"current": current, "shadow": shadow}     # what the scorer runs now
        self._refused: dict[str, str | None] = {"current": None, "shadow": None}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "RegistryWatcher":
        self._thread = threading.Thread(target=self._run, name="registry-watch", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.poll()
            except Exception:       # a damaged registry must not kill the watcher: log and poll on
                log.exception("registry poll failed")

    def poll(self) -> list[str]:
        """Apply pointer changes now; returns the pointers that changed the scorer."""
        changed = []
        with self._lock:
            for which in POINTERS:
                if which == "shadow" and self.on_shadow is None:
                    continue
                name = self.registry.pointer(which)
                if name == self.applied[which] or (name is not None and name == self._refused[which]):
                    continue
                if which == "current" and name is None:
                    if self._refused["current"] != "<unset>":
                        log.error(json.dumps({"event": "registry_current_unset", "registry": str(self.registry.root),
                                              "serving": self.applied["current"]}))
                        self._refused["current"] = "<unset>"    # keep serving; say it once
                    continue
                if self._apply(which, name):
                    changed.append(which)
        return changed

    def _apply(self, which: str, name: str | None) -> bool:
        path = None if name is None else self.registry.versions_dir / name
        fn = self.on_current if which == "current" else self.on_shadow
        try:
            fn(path)
        except Exception as e:
            self._refused[which] = name
            log.error(json.dumps({"event": f"registry_{which}_refused", "registry": str(self.registry.root),
                                  "version": name, "serving": self.applied[which], "error": str(e)}))
            return False
        log.info(json.dumps({"event": f"registry_{which}_applied", "registry": str(self.registry.root),
                             "from": self.applied[which], "to": name}))
        self.applied[which] = name
        self._refused[which] = None
        return True

    def reload_current(self):
        """SIGHUP / Reload RPC without a path: re-resolve `current` now and reload it
        (even when unchanged); returns what on_current returns, raises if refused."""
        with self._lock:
            name = self.registry.current()
            if name is None:
                raise RegistryError(f"registry {self.registry.root} has no current version")
            result = self.on_current(self.registry.versions_dir / name)
            self.applied["current"] = name
            self._refused["current"] = None
            return result


def version_table(reg: Registry) -> list[dict]:
    """`distillguard registry` listing rows (JSON-ready)."""
    return [asdict(v) for v in reg.list()]
