"""The import graph of the installed folders, read from source with `ast` (imports inside
functions included, relative imports resolved): the analysis behind
tests/test_architecture.py, and a command that prints it.

    python scripts/import_graph.py             # folders, ranks, folder-to-folder edges, faults
    python scripts/import_graph.py --modules   # every module-to-module edge as well
    python scripts/import_graph.py --sizes     # the largest modules and functions too

Ranks (docs/architecture.md): a module may import its own folder and lower ranks only.
The generated gRPC stubs (`distillguard.v1`) rank with serving's lowest layer.
"""
from __future__ import annotations

import argparse
import ast
import collections
import tomllib
from dataclasses import dataclass
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parents[1]   # scripts/ -> the checkout
NAMESPACE = "distillguard"
RANKS = {"model": 0, "v1": 1, "serving": 1, "training": 2, "cli": 3, "benchmarks": 3, "demos": 3}
MODEL_FORBIDDEN = ("lightning", "pytorch_lightning", "grpc", "grpc_health", "grpc_reflection", "onnxruntime")


@dataclass(frozen=True)
class Import:
    src: str          # importing module, e.g. distillguard.serving.bundle
    target: str       # imported module (a name's module when the name is not a module itself)
    name: str | None  # the name taken from it (`from target import name`, `target.name`), if any
    line: int


def installed_packages(root: Path = ROOT) -> dict[str, Path]:
    """pyproject's package-dir: installed package name -> its folder."""
    conf = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    return {pkg: root / folder for pkg, folder in conf["package-dir"].items()}


def module_files(packages: dict[str, Path]) -> dict[str, Path]:
    """Module name -> file, for every .py under each package folder (packages nested in a
    folder included; a package's own name maps to its __init__.py)."""
    out = {}
    for pkg, folder in packages.items():
        for f in sorted(folder.rglob("*.py")):
            parts = f.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join((pkg, *parts))] = f
    return out


def folder_of(module: str, packages: dict[str, Path]) -> str | None:
    """The installed package a module belongs to (the longest matching prefix)."""
    best = None
    for pkg in packages:
        if (module == pkg or module.startswith(pkg + ".")) and (best is None or len(pkg) > len(best)):
            best = pkg
    return best


def _resolve(src: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = src.split(".") if is_package else src.split(".")[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def read_imports(modules: dict[str, Path]) -> list[Import]:
    """Every import statement of every module (anywhere in the file), resolved; plus
    `alias.attr` uses of an imported distillguard module, which reach a name as surely
    as `from module import attr` does."""
    out = []
    for src, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        is_package = path.name == "__init__.py"
        aliases: dict[str, str] = {}       # local name -> distillguard module it is bound to
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    out.append(Import(src, a.name, None, node.lineno))
                    if a.asname and a.name in modules:
                        aliases[a.asname] = a.name
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(src, is_package, node)
                for a in node.names:
                    sub = f"{base}.{a.name}"
                    if sub in modules:                 # `from pkg import submodule`
                        out.append(Import(src, sub, None, node.lineno))
                        aliases[a.asname or a.name] = sub
                    else:
                        out.append(Import(src, base, a.name, node.lineno))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
                out.append(Import(src, aliases[node.value.id], node.attr, node.lineno))
    return out


def _rank(pkg: str) -> int:
    return RANKS[pkg.rsplit(".", 1)[-1]]


def _where(imp: Import, modules: dict[str, Path], root: Path) -> str:
    return f"{modules[imp.src].relative_to(root)}:{imp.line}"


def wrong_way_imports(imports, modules, packages, root=ROOT) -> list[str]:
    bad = []
    for imp in imports:
        src_pkg, dst_pkg = folder_of(imp.src, packages), folder_of(imp.target, packages)
        if dst_pkg is not None and _rank(dst_pkg) > _rank(src_pkg):
            bad.append(f"{_where(imp, modules, root)}: {imp.src} (rank {_rank(src_pkg)}) imports "
                       f"{imp.target} (rank {_rank(dst_pkg)})")
    return sorted(set(bad))


def private_imports(imports, modules, packages, root=ROOT) -> list[str]:
    """A leading-underscore name (or module) of another folder: its private API."""
    def private(part: str) -> bool:
        return part.startswith("_") and not (part.startswith("__") and part.endswith("__"))

    bad = []
    for imp in imports:
        src_pkg, dst_pkg = folder_of(imp.src, packages), folder_of(imp.target, packages)
        if dst_pkg is None or dst_pkg == src_pkg:
            continue
        inner = imp.target[len(dst_pkg):].split(".")[1:] + ([imp.name] if imp.name else [])
        if any(private(p) for p in inner):
            bad.append(f"{_where(imp, modules, root)}: {imp.src} uses private "
                       f"{imp.target}{'.' + imp.name if imp.name else ''}")
    return sorted(set(bad))


def import_graph(imports, modules) -> nx.DiGraph:
    g = nx.DiGraph()
    g.add_nodes_from(modules)
    g.add_edges_from((i.src, i.target) for i in imports if i.target in modules)
    return g


def import_cycles(graph: nx.DiGraph) -> list[list[str]]:
    """One cycle path per strongly connected component of more than one module (or a
    module importing itself)."""
    cycles = []
    for scc in nx.strongly_connected_components(graph):
        first = min(scc)
        if len(scc) == 1 and not graph.has_edge(first, first):
            continue
        path = [u for u, _ in nx.find_cycle(graph.subgraph(scc), source=first)]
        cycles.append(path + [path[0]])
    return sorted(cycles)


def print_sizes(modules: dict[str, Path], most: int = 8) -> None:
    """Lines per module and per function (def to its last line), largest first; generated
    stubs left out."""
    files, funcs = [], []
    for m, f in modules.items():
        if f.name.endswith(("_pb2.py", "_pb2_grpc.py")):
            continue
        text = f.read_text()
        files.append((len(text.splitlines()), f.relative_to(ROOT)))
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                funcs.append((node.end_lineno - node.lineno + 1, f"{f.relative_to(ROOT)}:{node.name}"))
    print("largest modules (lines):")
    for n, f in sorted(files, reverse=True)[:most]:
        print(f"  {n:5d} {f}")
    print("largest functions (lines):")
    for n, f in sorted(funcs, reverse=True)[:most]:
        print(f"  {n:5d} {f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--modules", action="store_true", help="print every module-to-module edge too")
    ap.add_argument("--sizes", action="store_true", help="print the 8 largest modules and functions (lines)")
    a = ap.parse_args()
    packages = installed_packages()
    modules = module_files(packages)
    imports = read_imports(modules)
    lines = collections.Counter()
    for m, f in modules.items():
        lines[folder_of(m, packages)] += len(f.read_text().splitlines())
    print("folder (rank): modules, lines")
    for pkg in sorted(packages, key=lambda p: (_rank(p), p)):
        n = sum(folder_of(m, packages) == pkg for m in modules)
        print(f"  {pkg} ({_rank(pkg)}): {n} modules, {lines[pkg]} lines")
    edges = collections.Counter()
    for i in imports:
        s, d = folder_of(i.src, packages), folder_of(i.target, packages)
        if d is not None and s != d and i.target in modules:
            edges[(s, d)] += 1
    print("folder -> folder: import statements")
    for (s, d), n in sorted(edges.items(), key=lambda e: (_rank(e[0][0]), e[0])):
        print(f"  {s} -> {d}: {n}")
    graph = import_graph(imports, modules)
    if a.modules:
        print("module -> modules")
        for m in sorted(graph):
            print(f"  {m} -> {' '.join(sorted(graph.successors(m))) or '-'}")
    if a.sizes:
        print_sizes(modules)
    faults = (wrong_way_imports(imports, modules, packages) + private_imports(imports, modules, packages)
              + [" -> ".join(c) for c in import_cycles(graph)])
    print(f"faults (wrong-way imports, private names across folders, cycles): {len(faults)}")
    for f in faults:
        print(f"  {f}")


if __name__ == "__main__":
    main()
