"""`distillguard` console script: one module per verb beside this one, each with
`add_parser(subparsers)` (the verb's options) next to its handler(s) `run*(args) -> exit code`.

Verb modules import only argparse-level code at the top; everything heavy (torch, gRPC,
onnxruntime, pandas) is imported inside the handlers, so `--help` stays fast. Errors a
user can fix (bad input file, bad bundle, unreadable path, bad value) exit 2 with one line
`distillguard VERB: error: ...` on stderr; old spellings of modes run with a note naming
the new form (`evaluate.legacy_argv`, `bench.legacy_args`).
"""
from __future__ import annotations

import argparse
import logging
import sys

from . import bench, evaluate, feedback, registry, replay, score, serve, shadow_report, simulate, train

# In `distillguard --help` order; registry.py holds promote, rollback and registry.
VERB_MODULES = (simulate, train, score, evaluate, registry, serve, shadow_report, replay, feedback, bench)
_GLOBAL = ("-v", "--verbose")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="distillguard", description=(
        "Detect distillation harvesting of an LLM API from per-session request behaviour."))
    ap.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    for module in VERB_MODULES:
        module.add_parser(sub)
    return ap


def parse_args(argv: list[str]) -> argparse.Namespace:
    """argv -> the namespace a handler gets (`a.fn(a)`), old mode spellings translated."""
    i = next((k for k, t in enumerate(argv) if t not in _GLOBAL), len(argv))
    verb, rest = (argv[i], argv[i + 1:]) if i < len(argv) else (None, [])
    if verb == "evaluate":
        argv = [*argv[:i + 1], *evaluate.legacy_argv(rest)]
    elif verb == "bench":
        a = bench.legacy_args(rest)
        if a is not None:
            a.verbose = any(t in _GLOBAL for t in argv[:i])
            return a
    return build_parser().parse_args(argv)


def main(argv=None) -> int:
    a = parse_args(list(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(level=logging.DEBUG if a.verbose else (logging.INFO if a.cmd == "serve" else logging.WARNING),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    from ..model.schema import SchemaError
    from ..serving.bundle import BundleError

    try:
        return a.fn(a)
    except (SchemaError, BundleError, OSError, ValueError) as e:   # OSError: disk full, permissions...
        print(f"distillguard {a.cmd}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
