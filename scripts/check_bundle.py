"""Are two model bundles the same model? `make model` reproducibility as the design card
defines it: the same graph, the same initializers (exact bytes) and the same onnxruntime
outputs on a fixed batch, whatever directory each was exported from.

    python scripts/check_bundle.py serving/default_bundle runs/model-check/bundle [--atol 0]

Exit status 0 when they are the same, 1 with the differences listed otherwise."""
import argparse
import sys
from pathlib import Path

from distillguard.training.export import bundle_differences


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("first", type=Path, help="bundle directory (model.onnx + metadata.json)")
    p.add_argument("second", type=Path)
    p.add_argument("--atol", type=float, default=0.0,
                   help="largest |difference| of ORT outputs accepted (default 0: bit-equal)")
    a = p.parse_args(argv)
    for d in (a.first, a.second):
        if not (d / "model.onnx").is_file() or not (d / "metadata.json").is_file():
            p.error(f"{d} is not a bundle directory (model.onnx and metadata.json)")
    diffs, notes = bundle_differences(a.first, a.second, atol=a.atol)
    for n in notes:
        print(f"note: {n}")
    if diffs:
        print(f"{a.first} and {a.second} differ:")
        for d in diffs:
            print(f"  {d}")
        return 1
    print(f"{a.first} and {a.second}: same graph, same initializers, same ORT outputs, same version")
    return 0


if __name__ == "__main__":
    sys.exit(main())
