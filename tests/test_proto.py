"""Generated stubs match the .proto (they are built by `make proto`, never edited)."""
import filecmp

from distillguard.serving import stubs


def test_generated_stubs_match_the_proto(tmp_path):
    stubs.generate(tmp_path)
    fresh = tmp_path / "distillguard" / "v1"
    for name in ("scorer_pb2.py", "scorer_pb2_grpc.py", "scorer_pb2.pyi"):
        assert filecmp.cmp(fresh / name, stubs.OUT_DIR / name, shallow=False), name
    assert stubs.STAMP.read_text().strip() == stubs.proto_sha()


def test_every_rpc_and_field_is_documented():
    lines = stubs.PROTO.read_text().splitlines()
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
