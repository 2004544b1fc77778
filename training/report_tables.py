"""The README's tables, rendered from the JSON that `make report` writes into reports/.

A README table sits between two markers,

    <!-- report:NAME -->
    ...
    <!-- /report:NAME -->

and `update_readme` replaces what lies between them with `render(NAME, reports_dir)`, so
every figure in those tables comes from a file the last `make report` wrote (its command
is named under each table). Text outside the markers is never touched. A marker pair
that is missing, unbalanced or unknown, or a report file that is missing, is an error
naming it: the README is left as it was.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable

from ..model.files import publish_text

_BEGIN = "<!-- report:{name} -->"
_END = "<!-- /report:{name} -->"
_MARKER = re.compile(r"<!-- (/?)report:([a-z_]+) -->")


class ReportMissing(FileNotFoundError):
    pass


def _load(reports: Path, rel: str) -> dict:
    path = reports / rel
    if not path.is_file():
        raise ReportMissing(f"{path}: not found; run `make report` first (it writes every table the README shows)")
    return json.loads(path.read_text())


def _f(x, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _ci(ci, digits: int = 3) -> str:
    return f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]" if ci else ""


def _cross_matrix(reports: Path) -> str:
    from .cross_generator import matrix_markdown

    rep = _load(reports, "cross_generator/cross_generator.json")
    return "\n".join(matrix_markdown(rep)) + (
        f"\n\n(`distillguard evaluate cross`, {rep['timings']['total_s']:.0f} s; "
        "`reports/cross_generator/cross_generator.md`)")


def _cross_served(reports: Path) -> str:
    from .cross_generator import evidence_markdown, served_markdown

    rep = _load(reports, "cross_generator/cross_generator.json")
    return "\n".join(served_markdown(rep)) + "\n\n" + "\n".join(evidence_markdown(rep))


def _cross_families(reports: Path) -> str:
    from .cross_generator import family_markdown

    rep = _load(reports, "cross_generator/cross_generator.json")
    return "\n".join(family_markdown(rep["table"]["a->b"]))


def _holdout(reports: Path) -> str:
    from .holdout import side_by_side

    rep = _load(reports, "holdout/holdout.json")
    s = rep["test_set"]
    return "\n".join(side_by_side(rep)) + (
        f"\n\nCells: transformer / rules / GBT. Test set {s['sessions']} sessions "
        f"({s['sessions_per_class']['human']} human), `distillguard evaluate holdout`, "
        f"{rep['timings']['total_s']:.0f} s.")


def _span_int(v: list[int]) -> str:
    return f"{min(v)}" if min(v) == max(v) else f"{min(v)}–{max(v)}"


def _robustness(reports: Path) -> str:
    rep = _load(reports, "robustness/robustness.json")
    lines = ["| knob | values | recall @1% FPR | recall @0.1% FPR | recall @BLOCK | human sessions per point |",
             "| --- | --- | --- | --- | --- | --- |"]

    def span(pts, key):
        v = [p[key] for p in pts if p[key] is not None]
        return "–" if not v else f"{min(v):.2f}–{max(v):.2f}"

    for name, r in rep.items():
        pts = r["points"]
        lines.append(f"| {name} | {', '.join(str(p['value']) for p in pts)} | {span(pts, 'recall_at_1pct_fpr')} | "
                     f"{span(pts, 'recall_at_0.1pct_fpr')} | {span(pts, 'recall_at_block_threshold')} | "
                     f"{_span_int([p['human_sessions'] for p in pts])} |")
    lines.append("\n(`distillguard evaluate robustness`; ranges over each knob's points, "
                 "`reports/robustness/robustness.md` has every point)")
    return "\n".join(lines)


def _in_distribution(reports: Path) -> str:
    m = _load(reports, "eval/metrics.json")
    s = m["set_sizes"]
    r = m["recall_at_human_fpr"]
    rows = ["| sessions (human / benign / distillation) | macro-F1 | distill recall @1% FPR | "
            "distill recall @0.1% FPR |", "| --- | --- | --- | --- |",
            f"| {s['sessions']} ({s['sessions_per_class']['human']} / {s['sessions_per_class']['benign_automation']} / "
            f"{s['sessions_per_class']['distillation_harvesting']}) | {_f(m['macro_f1'])}{_ci(m['macro_f1_ci95'])} | "
            f"{_f(r['1%']['recall'])}{_ci(r['1%']['recall_ci95'])} | {_f(r['0.1%']['recall'])}"
            f"{_ci(r['0.1%']['recall_ci95'])}{'' if r['0.1%']['reliable'] else ' (not reliable)'} |",
            "", "(`distillguard evaluate` on `distillguard simulate --seed 13 --events 400000`; `reports/eval`)"]
    return "\n".join(rows)


def _calibration(reports: Path) -> str:
    m = _load(reports, "eval/metrics.json")
    c = m["calibration"]
    lines = ["| test set | temperature | ECE raw network | ECE served |", "| --- | --- | --- | --- |",
             f"| generator A, seed 13 (in distribution) | {c['temperature']:.3f} | {c['ece_raw']:.4f} | "
             f"{c['ece_served']:.4f} |"]
    cross = reports / "cross_generator/cross_generator.json"
    if cross.is_file():
        rep = json.loads(cross.read_text())
        cell = rep["cells"].get("a->b")
        if cell:
            raw = cell["summary"].get("ece_raw")
            lines.append(f"| generator B (cross) | {c['temperature']:.3f} | {_f(raw, 4)} | "
                         f"{cell['summary']['ece_served']:.4f} |")
    lines.append("\n(top-label expected calibration error, 15 bins; `reports/eval/report.md`, "
                 "`reports/cross_generator`)")
    return "\n".join(lines)


def _shift_audit(reports: Path) -> str:
    """One row per shift: generator A's humans (the model's own distribution, so the shift is
    the only change) and, when `make report` audited them too, generator B's humans."""
    a = _load(reports, "shift_audit/shift_audit.json")
    b_path = reports / "shift_audit_b" / "shift_audit.json"
    b = json.loads(b_path.read_text()) if b_path.is_file() else None

    def cell(rep, name):
        if rep is None or name not in rep["shifts"]:
            return "–"
        r = rep["shifts"][name]
        v = r["flag_rate"]["value"]
        x = r["flag_rate_x_base"]
        bad = " **violation**" if name in rep["violations"] else ""
        return "–" if v is None else f"{v:.3f} ({'–' if x is None else f'{x:.2f}x'}){bad}"

    def base(rep):
        return "–" if rep is None else f"{rep['base']['flag_rate']['value']:.3f}"

    lines = ["| shift | field | A humans: flag rate (x base) | B humans: flag rate (x base) |",
             "| --- | --- | --- | --- |",
             f"| **base** | – | {base(a)} | {base(b)} |"]
    for name, r in a["shifts"].items():
        lines.append(f"| {name} | `{r['field']}` | {cell(a, name)} | {cell(b, name)} |")
    sizes = f"A: {a['base_set']['sessions_per_class']['human']} human sessions" + (
        f", B: {b['base_set']['sessions_per_class']['human']}" if b else "")
    lines.append(f"\nFlag rate = share of human sessions the bundle's policy does not ALLOW; violation = > "
                 f"{a['rule']['factor']:g}x base and > {a['rule']['floor']:.0%} ({sizes}; `distillguard evaluate shift`; "
                 "`reports/shift_audit*/shift_audit.md` have every column).")
    return "\n".join(lines)


RENDERERS: dict[str, Callable[[Path], str]] = {
    "cross_generator": _cross_matrix,
    "cross_generator_families": _cross_families,
    "cross_generator_served": _cross_served,
    "holdout": _holdout,
    "shift_audit": _shift_audit,
    "robustness": _robustness,
    "in_distribution": _in_distribution,
    "calibration": _calibration,
}


def render(name: str, reports_dir) -> str:
    if name not in RENDERERS:
        raise KeyError(f"unknown report table {name!r}; known: {', '.join(RENDERERS)}")
    return RENDERERS[name](Path(reports_dir))


def blocks(text: str) -> list[str]:
    """Names of the marked blocks in `text`, in order; an unbalanced or nested marker raises."""
    names, open_ = [], None
    for m in _MARKER.finditer(text):
        closing, name = m.group(1) == "/", m.group(2)
        if not closing:
            if open_ is not None:
                raise ValueError(f"report block {name!r} opens inside {open_!r}")
            open_ = name
        else:
            if open_ != name:
                raise ValueError(f"report block end {name!r} without its start")
            names.append(name)
            open_ = None
    if open_ is not None:
        raise ValueError(f"report block {open_!r} is never closed")
    return names


def update_text(text: str, reports_dir, names=None) -> tuple[str, list[str]]:
    present = blocks(text)
    unknown = [n for n in present if n not in RENDERERS]
    if unknown:
        raise KeyError(f"unknown report table(s) {unknown}; known: {', '.join(RENDERERS)}")
    todo = list(names) if names else present
    missing = [n for n in todo if n not in present]
    if missing:
        raise KeyError(f"no marked block for {missing} (add {_BEGIN.format(name=missing[0])} ... "
                       f"{_END.format(name=missing[0])})")
    rendered = {n: render(n, reports_dir) for n in todo}   # every file read before anything changes
    for n, body in rendered.items():
        begin, end = _BEGIN.format(name=n), _END.format(name=n)
        i, j = text.index(begin) + len(begin), text.index(end)
        text = text[:i] + "\n" + body.strip("\n") + "\n" + text[j:]
    return text, todo


def update_readme(readme, reports_dir, names=None) -> list[str]:
    """Rewrite the README's marked tables from reports_dir; returns the names updated."""
    readme = Path(readme)
    text, done = update_text(readme.read_text(), reports_dir, names)
    publish_text(readme, text)
    return done
