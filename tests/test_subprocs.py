"""serving.subprocs.die_with_parent: child processes do not outlive the test that started them."""
import os
import subprocess
import sys
import time
from pathlib import Path

from distillguard.serving.subprocs import die_with_parent


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"     # a zombie has exited


def test_the_wrapped_command_keeps_the_pid_popen_returns():
    p = subprocess.Popen(die_with_parent(["sleep", "30"]))
    try:
        deadline = time.monotonic() + 10
        while Path(f"/proc/{p.pid}/comm").read_text().strip() != "sleep":
            assert time.monotonic() < deadline, "the launcher never exec'd the command"
            time.sleep(0.02)
    finally:
        p.kill()
        p.wait()


def test_the_child_dies_when_its_parent_does(tmp_path):
    # A parent process starts `sleep 60` through die_with_parent, reports its pid and exits.
    code = ("import subprocess, sys\n"
            "from distillguard.serving.subprocs import die_with_parent\n"
            "p = subprocess.Popen(die_with_parent(['sleep', '60']), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
            "print(p.pid, flush=True)\n"
            "import time; time.sleep(0.5)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    child = int(out.stdout.split()[0])
    deadline = time.monotonic() + 10
    while _alive(child):
        if time.monotonic() > deadline:
            os.kill(child, 9)
            raise AssertionError("the child outlived its parent by 10 s")
        time.sleep(0.05)
