"""model.files: the one way a file is published (temp + fsync + rename + directory fsync).
Real files in a real directory: a write that fails halfway leaves the old file as it was
and no temporary file behind; what a reader of the directory sees is the old file or the
whole new one."""
import os
import subprocess
import sys

import pytest

from distillguard.model.files import fsync_dir, publish, publish_atomically, temp_path


def _names(d):
    return sorted(p.name for p in d.iterdir())


def test_publish_atomically_replaces_the_file_and_leaves_no_temp(tmp_path):
    p = tmp_path / "report.json"
    p.write_text("old")
    publish_atomically(p, lambda tmp: tmp.write_text("new"))
    assert p.read_text() == "new"
    assert _names(tmp_path) == ["report.json"]


def test_write_raising_midway_keeps_the_old_file_and_removes_the_temp(tmp_path):
    p = tmp_path / "report.json"
    p.write_text("old contents")
    seen = []

    def write(tmp):
        seen.append(tmp)
        with open(tmp, "w") as f:
            f.write("half of the new")
            f.flush()
        assert tmp.exists() and tmp.parent == p.parent and tmp.name.startswith(".")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        publish_atomically(p, write)
    assert p.read_text() == "old contents"
    assert _names(tmp_path) == ["report.json"]         # the temporary file is gone
    assert seen == [temp_path(p)]


def test_write_raising_with_no_old_file_leaves_nothing(tmp_path):
    def write(tmp):
        tmp.write_bytes(b"partial")
        raise KeyboardInterrupt   # not only Exceptions: Ctrl-C mid-write cleans up too

    with pytest.raises(KeyboardInterrupt):
        publish_atomically(tmp_path / "out.csv", write)
    assert _names(tmp_path) == []


def test_a_write_that_never_creates_the_temp_is_an_error_and_touches_nothing(tmp_path):
    p = tmp_path / "x.txt"
    p.write_text("old")
    with pytest.raises(FileNotFoundError):
        publish_atomically(p, lambda tmp: None)   # nothing to publish: an error, not an empty file
    assert p.read_text() == "old" and _names(tmp_path) == ["x.txt"]


def test_explicit_temp_name_and_permissions_are_kept(tmp_path):
    final = tmp_path / "part-0-000001-x.parquet"
    tmp = tmp_path / ".part-0-000001.parquet.tmp"

    def write(t):
        fd = os.open(t, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(b"data")

    publish_atomically(final, write, tmp=tmp)
    assert final.read_bytes() == b"data" and not tmp.exists()
    assert final.stat().st_mode & 0o777 == 0o600


def test_publish_a_directory_and_a_symlink(tmp_path):
    incoming = tmp_path / ".incoming-v0001"
    incoming.mkdir()
    (incoming / "model.onnx").write_bytes(b"onnx")
    publish(incoming, tmp_path / "v0001")
    assert (tmp_path / "v0001" / "model.onnx").read_bytes() == b"onnx" and not incoming.exists()

    link_tmp = tmp_path / ".current.tmp"
    os.symlink("v0001", link_tmp)
    (tmp_path / "current").symlink_to("elsewhere")
    publish(link_tmp, tmp_path / "current")
    assert os.readlink(tmp_path / "current") == "v0001" and not link_tmp.is_symlink()


def test_fsync_dir_errors_unless_best_effort(tmp_path):
    missing = tmp_path / "no-such-dir"
    with pytest.raises(FileNotFoundError):
        fsync_dir(missing)
    fsync_dir(missing, best_effort=True)
    fsync_dir(tmp_path)


def test_a_killed_writer_never_leaves_a_partial_file_under_the_final_name(tmp_path):
    """A real crash (the process dies mid-write, no cleanup runs): the final name still
    holds the old file; only a hidden temporary file may remain, which loaders skip."""
    p = tmp_path / "snapshot.bin"
    p.write_bytes(b"old")
    code = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from distillguard.model.files import publish_atomically\n"
        "def write(tmp):\n"
        "    tmp.write_bytes(b'half')\n"
        "    os._exit(3)\n"
        f"publish_atomically(Path({str(p)!r}), write)\n"
    )
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 3
    assert p.read_bytes() == b"old"
    assert [n for n in _names(tmp_path) if not n.startswith(".")] == ["snapshot.bin"]
