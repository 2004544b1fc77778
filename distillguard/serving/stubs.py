"""The generated gRPC stubs, regenerated from the .proto when missing or stale.

`make proto` runs `generate()`; importing this module does the same if the stubs are
absent or were built from a different .proto, so a checkout can never serve an old contract.
"""
from __future__ import annotations

import hashlib
import importlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROTO = ROOT / "proto" / "distillguard" / "v1" / "scorer.proto"
OUT_DIR = ROOT / "distillguard" / "v1"
STAMP = OUT_DIR / ".proto.sha256"


def proto_sha() -> str:
    return hashlib.sha256(PROTO.read_bytes()).hexdigest()


def generate(out_root: Path = ROOT) -> None:
    """Run protoc (grpcio-tools) into out_root/distillguard/v1/."""
    from grpc_tools import protoc
    import grpc_tools

    include = Path(grpc_tools.__file__).parent / "_proto"
    args = ["protoc", f"-I{ROOT / 'proto'}", f"-I{include}", f"--python_out={out_root}",
            f"--grpc_python_out={out_root}", f"--pyi_out={out_root}", str(PROTO)]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed on {PROTO}")
    if out_root == ROOT:
        STAMP.write_text(proto_sha() + "\n")


def _fresh() -> bool:
    return (OUT_DIR / "scorer_pb2.py").exists() and STAMP.exists() and STAMP.read_text().strip() == proto_sha()


if PROTO.exists() and not _fresh():
    generate()

pb = importlib.import_module("distillguard.v1.scorer_pb2")
pb_grpc = importlib.import_module("distillguard.v1.scorer_pb2_grpc")
