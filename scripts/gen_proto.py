"""Regenerate the committed gRPC stubs from proto/ (`make proto`), or check them.

    python scripts/gen_proto.py            # write proto/distillguard/v1/scorer_pb2*.py(i)
    python scripts/gen_proto.py --out DIR  # write them under DIR/distillguard/v1/ instead
"""
from __future__ import annotations

import argparse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROTO_ROOT = ROOT / "proto"
PROTOS = sorted(PROTO_ROOT.rglob("*.proto"))
GENERATED = ("scorer_pb2.py", "scorer_pb2_grpc.py", "scorer_pb2.pyi")


def generate(out_root: Path) -> list[Path]:
    """protoc (grpcio-tools, pinned) over every .proto under proto/, into out_root."""
    import grpc_tools
    from grpc_tools import protoc

    include = Path(grpc_tools.__file__).parent / "_proto"
    out_root.mkdir(parents=True, exist_ok=True)
    for proto in PROTOS:
        args = ["protoc", f"-I{PROTO_ROOT}", f"-I{include}", f"--python_out={out_root}",
                f"--grpc_python_out={out_root}", f"--pyi_out={out_root}", str(proto)]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed on {proto}")
    return [out_root / "distillguard" / "v1" / name for name in GENERATED]


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=PROTO_ROOT)
    for path in generate(ap.parse_args().out):
        print(path)
