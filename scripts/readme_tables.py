"""Rewrite the README's marked tables from the JSON `make report` wrote (training/report_tables.py).

    python scripts/readme_tables.py [--reports reports] [--readme README.md] [--only NAME ...]
"""
from __future__ import annotations

import argparse
import sys

from distillguard.training.report_tables import ReportMissing, update_readme


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reports", default="reports")
    p.add_argument("--readme", default="README.md")
    p.add_argument("--only", nargs="+", metavar="NAME", help="only these tables")
    a = p.parse_args(argv)
    try:
        done = update_readme(a.readme, a.reports, a.only)
    except (ReportMissing, KeyError, ValueError) as e:
        print(f"readme_tables: {e}", file=sys.stderr)
        return 1
    print(f"{a.readme}: rewrote {len(done)} tables from {a.reports}: {', '.join(done)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
