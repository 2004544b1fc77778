"""Publishing files by rename, crash-safely: the one way the snapshot, event log, registry,
labels store, rejects file, score output, bundle files, reports and benchmark results put a
file under its final name.

A file is written under a hidden temporary name beside its final one (`temp_path`: same
directory, so the rename is atomic; a leading dot, so directory readers such as our
loaders skip it), then `publish` makes it durable and renames it into place: fsync the
file (its data is on disk before a name points at it), rename, fsync the directory (the
rename itself survives a crash). A reader sees the old file or the whole new one, never
half of it. `publish_atomically(path, write)` is the whole sequence for a writer that
writes in one call; writers that stream (rejects, score output) keep their temporary
file open across calls and `publish` it when they finish.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable


def fsync_dir(path: str | Path, best_effort: bool = False) -> None:
    """fsync a directory so the entries created or renamed in it survive a crash.
    best_effort: ignore a filesystem that cannot open or sync directories (some network
    and overlay mounts) instead of raising."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        if best_effort:
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not best_effort:
            raise
    finally:
        os.close(fd)


def temp_path(path: str | Path) -> Path:
    """Where `path` is written before it is published: `.<name>.tmp-<pid>` beside it
    (per process, so two writers of one name never share a temporary file)."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def publish(tmp: str | Path, path: str | Path, *, best_effort_dir: bool = False) -> None:
    """Rename the complete `tmp` over `path` durably: fsync `tmp`, rename, fsync the
    directory. `tmp` may be a file, a directory of files already synced (its entries are
    synced here) or a symlink (its target is in the directory entry, synced with the
    directory). best_effort_dir: see `fsync_dir` (the file's own fsync always counts)."""
    tmp, path = Path(tmp), Path(path)
    if tmp.is_dir() and not tmp.is_symlink():
        fsync_dir(tmp)
    elif not tmp.is_symlink():
        # O_RDONLY is enough: fsync flushes the file, whatever the descriptor's mode.
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent, best_effort=best_effort_dir)


def publish_atomically(path: str | Path, write: Callable[[Path], object], *, tmp: str | Path | None = None,
                       best_effort_dir: bool = False) -> None:
    """write(tmp) under `tmp` (default `temp_path(path)`), then `publish` it as `path`.
    If write fails (or the file cannot be synced or renamed) the temporary file is
    removed, `path` is left as it was (the old file, or none) and the error propagates;
    only a failed directory sync after the rename leaves the new file in place."""
    path = Path(path)
    tmp = temp_path(path) if tmp is None else Path(tmp)
    try:
        write(tmp)
        publish(tmp, path, best_effort_dir=best_effort_dir)
    finally:
        tmp.unlink(missing_ok=True)


def publish_text(path: str | Path, text: str) -> Path:
    """`publish_atomically` for a whole text file (reports, JSON results, bundle metadata):
    a reader, or a crash, never sees half of it. Returns the path."""
    path = Path(path)
    publish_atomically(path, lambda tmp: Path(tmp).write_text(text), best_effort_dir=True)
    return path
