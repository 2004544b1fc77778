"""Durable file writes shared by the writers that publish by rename (snapshot, event log,
registry, labels store): a rename or a new file is only crash-safe once its directory
entry is on disk too."""
from __future__ import annotations

import os
from pathlib import Path


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


def replace_atomically(path: str | Path, write) -> None:
    """write(tmp) under a hidden temporary name beside `path`, then rename it over `path`:
    a reader sees the old file or the whole new one, never half of it (the loaders skip
    hidden names, so a crash leaves nothing they would read)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
