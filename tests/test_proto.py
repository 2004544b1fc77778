"""The committed stubs match the .proto (built by `make proto`, never edited)."""
import filecmp
import importlib.util
from pathlib import Path

import distillguard.v1

ROOT = Path(__file__).resolve().parents[1]
PROTO = ROOT / "proto" / "distillguard" / "v1" / "scorer.proto"


def _gen_proto():
    spec = importlib.util.spec_from_file_location("gen_proto", ROOT / "scripts" / "gen_proto.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_committed_stubs_match_the_proto(tmp_path):
    gen = _gen_proto()
    committed = Path(distillguard.v1.__file__).parent
    for fresh in gen.generate(tmp_path):
        assert filecmp.cmp(fresh, committed / fresh.name, shallow=False), \
            f"{fresh.name} is stale: run `make proto` and commit the result"


def test_every_rpc_and_field_is_documented():
    lines = PROTO.read_text().splitlines()
    for i, line in enumerate(lines):
        s = line.strip()
        if s.startswith("rpc "):
            assert lines[i - 1].strip().startswith("//"), f"undocumented rpc: {s}"
        if s.startswith("message ") and s.split()[1] in ("ScoreRequest", "CompleteRequest"):
            # every field of the two gateway-facing requests carries a comment above it
            j = i + 1
            while not lines[j].strip().startswith("}"):
                f = lines[j].strip()
                if f and not f.startswith("//") and "=" in f:
                    assert lines[j - 1].strip().startswith("//"), f"undocumented field: {f}"
                j += 1
