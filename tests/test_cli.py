"""The console script's shape: every verb and mode answers --help, old mode spellings still
parse (with a note naming the new form), no CLI module over 400 lines, --help imports
nothing heavy."""
import subprocess
import sys
from pathlib import Path

import pytest

from distillguard.cli import main, parse_args

CLI_DIR = Path(__file__).resolve().parents[1] / "cli"
COMMANDS = [
    ["simulate"], ["train"], ["score"], ["evaluate"], ["evaluate", "compare"], ["evaluate", "holdout"],
    ["evaluate", "robustness"], ["evaluate", "shift"], ["promote"], ["rollback"], ["registry"], ["serve"], ["shadow-report"],
    ["replay"], ["feedback"], ["bench"], *[["bench", m] for m in ("batch", "grpc", "state", "scaling", "shadow",
                                                                    "soak")],
]


@pytest.mark.parametrize("cmd", COMMANDS, ids=" ".join)
def test_every_verb_and_mode_has_help(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([*cmd, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: distillguard {' '.join(cmd)}")
    if cmd in (["evaluate"], ["bench"]):
        for mode in ("compare", "holdout", "robustness", "shift") if cmd == ["evaluate"] else ("batch", "grpc", "soak"):
            assert mode in out


def test_bench_without_a_known_mode_is_refused(capsys):
    with pytest.raises(SystemExit) as e:
        main(["bench", "templatez"])
    assert e.value.code == 2 and "invalid choice: 'templatez'" in capsys.readouterr().err


def test_old_evaluate_spellings_become_modes(capsys):
    a = parse_args(["evaluate", "--holdout-families", "harvest_agentic", "--holdout-out=reports/h",
                    "--holdout-seed", "3", "--holdout-epochs", "2", "-q"])
    assert (a.mode, a.families, a.out, a.seed, a.epochs, a.quiet) == ("holdout", ["harvest_agentic"], "reports/h",
                                                                      3, 2, True)
    assert ("`evaluate --holdout-families` is deprecated, use `distillguard evaluate holdout --families "
            "harvest_agentic --out=reports/h --seed 3 --epochs 2 -q`") in capsys.readouterr().err
    a = parse_args(["evaluate", "--robustness", "--model", "M", "--robustness-out", "R"])
    assert (a.mode, a.model, a.out) == ("robustness", "M", "R")
    assert "use `distillguard evaluate robustness --model M --out R`" in capsys.readouterr().err
    old = parse_args(["evaluate", "--model", "N", "--baseline", "C", "--events", "E", "--labels", "L",
                      "--report", "R", "--tolerance", "0.2", "--n-boot", "50"])
    assert "`evaluate --baseline` is deprecated" in capsys.readouterr().err
    new = parse_args(["evaluate", "compare", "--model", "N", "--baseline", "C", "--events", "E", "--labels", "L",
                      "--report", "R", "--tolerance", "0.2", "--n-boot", "50"])
    assert capsys.readouterr().err == ""
    assert vars(old) == vars(new) and new.fn.__name__ == "run_compare"
    # Options of the plain evaluation before the mode name count too (argparse would let the
    # mode's defaults overwrite them).
    before = parse_args(["evaluate", "--model", "N", "--n-boot", "50", "compare", "--baseline", "C"])
    assert (before.model, before.n_boot, before.on_error) == ("N", 50, "fail")
    with pytest.raises(SystemExit) as e:
        parse_args(["evaluate", "--robustness", "--baseline", "C"])
    assert e.value.code == 2
    assert "separate modes now" in capsys.readouterr().err


def test_old_bench_spelling_runs_each_mode(capsys):
    a = parse_args(["-v", "bench", "--batch", "--ray", "--grpc", "--events", "1000", "--soak-seconds", "9"])
    assert a.modes == ["batch", "grpc", "state"] and a.ray and a.events == 1000 and a.verbose
    err = capsys.readouterr().err
    assert "`bench --batch --grpc` is deprecated" in err and "distillguard bench batch" in err
    assert parse_args(["bench"]).modes == ["batch", "grpc", "state"]
    new = parse_args(["bench", "soak", "--seconds", "9", "--max-sessions", "50"])
    assert (new.soak_seconds, new.soak_max_sessions) == (9.0, 50)


def test_cli_modules_stay_small():
    sizes = {p.name: len(p.read_text().splitlines()) for p in CLI_DIR.glob("*.py")}
    assert sizes and max(sizes.values()) <= 400, sizes


def test_help_imports_nothing_heavy():
    code = ("import sys\nfrom distillguard.cli import build_parser\nbuild_parser().format_help()\n"
            "print(','.join(m for m in ('torch', 'grpc', 'onnxruntime', 'pandas', 'pyarrow', 'numpy') "
            "if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == ""
