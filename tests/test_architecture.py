"""The architecture in ``docs/architecture.md`` is the one in the code.

The layer table of that page is parsed here; every ``import`` of the package (at the top of a module *and* inside
functions), every ``importlib.import_module("cxrdistill…")`` and every module named in a string (plugin lists) is
checked against it:

- a module imports only its own layer and the layers below it;
- the packages of one layer never import each other in a circle;
- no two modules import each other, directly or through others (a cycle hidden inside a function is still a cycle);
- every package and top-level module sits in exactly one layer.

A failure names the file and line of each offending import.
"""
from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "src" / "cxrdistill"
DOC = ROOT / "docs" / "architecture.md"
MODULE_RE = re.compile(r"^cxrdistill(\.[A-Za-z_][A-Za-z0-9_]*)+$")


def _layers() -> list[tuple[str, set[str]]]:
    """The rows ``| n | name | `pkg`, `pkg` | … |`` of the table under ``## Layers`` in docs/architecture.md."""
    text = DOC.read_text()
    section = text.split("## Layers", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[0].isdigit():
            rows.append((int(cells[0]), cells[1], set(re.findall(r"`([A-Za-z_][\w]*)(?:\.py)?/?`", cells[2]))))
    assert rows, f"{DOC}: no layer table under '## Layers'"
    assert [r[0] for r in rows] == list(range(len(rows))), f"{DOC}: layers must be numbered 0, 1, 2, … in order"
    return [(name, pkgs) for _, name, pkgs in rows]


def _modules() -> dict[str, Path]:
    mods = {}
    for p in sorted(PKG.rglob("*.py")):
        parts = list(p.relative_to(PKG.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = p
    return mods


MODULES = _modules()


def _unit(module: str) -> str:
    """The architectural unit of a module: its top-level package, or the top-level module itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _resolve(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _import_targets(module: str, is_pkg: bool, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The modules of the package that one import statement of ``module`` imports."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        if node.level:
            base = module.split(".") if is_pkg else module.split(".")[:-1]
            base = base[: len(base) - node.level + 1]
            mod = ".".join(base + ([node.module] if node.module else []))
        else:
            mod = node.module or ""
        names = []
        for a in node.names:
            if mod == "cxrdistill" and a.name == "__version__":
                continue  # the version string is a constant of the package's facade, importing nothing
            sub = f"{mod}.{a.name}"
            names.append(sub if sub in MODULES else mod)
    return [r for name in names if name.startswith("cxrdistill") and (r := _resolve(name))]


def _imports(module: str, path: Path) -> list[tuple[str, int, bool]]:
    """(imported module, line, named in a string?) for every import of the package in ``path``, wherever it sits."""
    out: list[tuple[str, int, bool]] = []
    is_pkg = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            out += [(target, node.lineno, False) for target in _import_targets(module, is_pkg, node)]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and MODULE_RE.match(node.value):
            out.append((node.value, node.lineno, True))  # a module named in a string: plugin lists, import_module()
    return [(r, line, s) for name, line, s in out if name.startswith("cxrdistill") and (r := _resolve(name))]


EDGES: dict[str, list[tuple[str, str]]] = defaultdict(list)  # module -> [(imported module, "file:line")]
# A registry may list the modules of its own package that register entries in it (``Registry(plugins=...)``): they
# import the registry, the registry imports them lazily on first lookup. That is the plugin pattern, not a cycle.
PLUGIN_EDGES: set[tuple[str, str]] = set()
for _mod, _path in MODULES.items():
    for _target, _line, _string in _imports(_mod, _path):
        _edge = (_target, f"{_path.relative_to(ROOT)}:{_line}")
        if _target != _mod and _edge not in EDGES[_mod]:
            EDGES[_mod].append(_edge)
        if _string and _unit(_target) == _unit(_mod):
            PLUGIN_EDGES.add((_mod, _target))


def _sccs(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out = []
    nodes = sorted(set(graph) | {w for ws in graph.values() for w in ws})
    for root in nodes:
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
    return out


def test_the_layer_table_places_every_package_once():
    placed: dict[str, str] = {}
    for name, pkgs in _layers():
        for p in pkgs:
            assert p not in placed, f"{DOC}: `{p}` is in layers {placed[p]!r} and {name!r}"
            placed[p] = name
    units = {_unit(m) for m in MODULES}
    missing = sorted(units - set(placed))
    assert not missing, (f"{DOC}: add {missing} to the layer table (every package and top-level module of "
                         f"src/cxrdistill has one layer)")
    stale = sorted(set(placed) - units)
    assert not stale, f"{DOC}: the layer table names {stale}, which are not in src/cxrdistill; remove them"


def test_no_module_imports_a_higher_layer():
    level = {p: i for i, (_, pkgs) in enumerate(_layers()) for p in pkgs}
    names = [name for name, _ in _layers()]
    bad = []
    for mod, edges in sorted(EDGES.items()):
        a = _unit(mod)
        for target, where in edges:
            b = _unit(target)
            if a in level and b in level and level[b] > level[a]:
                bad.append(f"{where}: {mod} ({names[level[a]]}) imports {target} ({names[level[b]]}, a higher layer)")
    assert not bad, "upward imports (see docs/architecture.md for what each layer may import):\n" + "\n".join(bad)


def test_no_cycle_between_packages():
    graph: dict[str, set[str]] = defaultdict(set)
    where: dict[tuple[str, str], str] = {}
    for mod, edges in EDGES.items():
        for target, w in edges:
            a, b = _unit(mod), _unit(target)
            if a != b:
                graph[a].add(b)
                where.setdefault((a, b), w)
    cycles = _sccs(graph)
    msgs = [" ↔ ".join(c) + ": " + "; ".join(f"{where[a, b]} ({a} → {b})" for a in c for b in c if (a, b) in where)
            for c in cycles]
    assert not cycles, "packages importing each other in a circle:\n" + "\n".join(msgs)


def test_no_cycle_between_modules():
    graph = {m: {t for t, _ in edges if (m, t) not in PLUGIN_EDGES} for m, edges in EDGES.items()}
    cycles = _sccs(graph)
    msgs = []
    for c in cycles:
        lines = [f"{w} ({m} → {t})" for m in c for t, w in EDGES[m] if t in c and (m, t) not in PLUGIN_EDGES]
        msgs.append(" ↔ ".join(c) + ":\n  " + "\n  ".join(lines))
    assert not cycles, "modules importing each other in a circle (also through imports inside functions):\n" + \
        "\n".join(msgs)


@pytest.mark.parametrize("source, expected", [
    ("from cxrdistill.training.trainer import Trainer\n", ["cxrdistill.training.trainer"]),
    ("def f():\n    from cxrdistill.storage import io\n", ["cxrdistill.storage.io"]),
    ("from .. import errors\n", ["cxrdistill.errors"]),
    ("R = Registry('x', plugins=('cxrdistill.fairness',))\n", ["cxrdistill.fairness"]),
    ("from cxrdistill import __version__\n", []),
])
def test_the_parser_sees_every_kind_of_import(tmp_path, source, expected):
    p = tmp_path / "m.py"
    p.write_text(source)
    assert [m for m, _, _ in _imports("cxrdistill.models.m", p)] == expected


ONE_OF_EACH = {  # defined once in the package, here (docs/architecture.md, "One of each"); the public API in
    "load_cohort": "cohorts/validate.py",  # api.py may wrap them under the same name
    "load_embeddings": "evaluation/embedding_input.py",
    "Progress": "progress.py",
    "stable_hash": "storage/io.py",
    "fsync_dir": "storage/io.py",
    "prepare_run_dir": "training/run_dir.py",
    "run_stamp": "training/run_dir.py",
}
NORMALISATION = re.compile(r"\b0\.5\s*,\s*0\.25\b|-\s*0\.5\s*\)\s*/\s*0\.25|sub_\(0\.5\)|\"mean\": 0\.5")


def test_one_of_each_concept_is_defined_once():
    found: dict[str, list[str]] = defaultdict(list)
    norm, run_hash = [], []
    for path in MODULES.values():
        rel = str(path.relative_to(PKG))
        if rel == "api.py":
            continue
        text = path.read_text()
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = "Progress" if node.name.endswith("Progress") else node.name.lstrip("_")
                if name in ONE_OF_EACH:
                    found[name].append(f"{rel}:{node.lineno}")
        for i, line in enumerate(text.splitlines(), 1):
            if NORMALISATION.search(line) and "MEAN, STD = 0.5, 0.25" not in line:
                norm.append(f"{rel}:{i}")
            if "sha256(json.dumps(" in line and ".hexdigest()" in line:  # the whole key in one expression
                run_hash.append(f"{rel}:{i}")
    for name, home in ONE_OF_EACH.items():
        assert [w.split(":")[0] for w in found[name]] == [home], \
            f"{name} should be defined once, in {home}; found {found[name]}"
    assert not norm, f"the pixel normalisation written out again (use images.preprocess.MEAN, STD): {norm}"
    assert [w.split(":")[0] for w in run_hash] == ["storage/io.py"], \
        f"a sha256-of-JSON key written again (use storage.io.stable_hash): {run_hash}"


def test_training_methods_reach_the_higher_layers_by_discovery():
    """In a fresh process, the training METHODS registry finds the methods of fairness, fairkd and pretraining (their
    ``methods`` modules) on the first lookup, without training naming those packages."""
    import subprocess
    import sys

    code = ("import sys\n"
            "from cxrdistill.registry import discovered_modules\n"
            "from cxrdistill.training.method import METHODS\n"
            "before = sorted(m for m in sys.modules if m.startswith(('cxrdistill.fair', 'cxrdistill.pretraining')))\n"
            "print(discovered_modules('methods'))\n"
            "print(before)\n"
            "print(METHODS.names())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[0] == str(tuple(f"cxrdistill.{p}.methods" for p in ("fairkd", "fairness", "pretraining", "training")))
    assert out[1] == "[]"  # nothing of the higher layers is imported before a lookup
    names = out[2]
    for name in ("'distill'", "'classify'", "'fair_groupdro'", "'fairkd_mmd'", "'barlow'", "'finetune_aux'"):
        assert name in names



# ------------------------------------------------------------------------------------------ imports in functions
# Imports of the package sit at the top of their module, where a reader (and the import checks above) sees a module's
# dependencies at a glance. The entry points (commands/, cli.py, api.py, bench/) import inside their functions on
# purpose: `cxrdistill --help` must not import torch. Elsewhere an import stays inside a function only for a
# measured start-up cost, listed here as {file: {imported module: why}}.
LAZY_OK = ("commands/", "cli.py", "api.py", "bench/")
MATPLOTLIB = "report.plots imports matplotlib (about 1.5 s); loaded only when a figure is drawn"
TORCH = "loads torch (about 4 s), needed only when the function trains or runs a network"
LAZY_IMPORTS: dict[str, dict[str, str]] = {
    "__init__.py": {"cxrdistill.api": "`import cxrdistill` (the first import of every command) loads the API only "
                                      "when one of its functions is used (PEP 562 module __getattr__)"},
    "export.py": dict.fromkeys(("cxrdistill.models.device", "cxrdistill.models.network"),
                               "onnx_embed runs an exported model with onnxruntime alone; models.network loads torch "
                               "and timm (several seconds), needed only to export"),
    "pretraining/finetune.py": {"cxrdistill.report.plots": MATPLOTLIB},
    "pretraining/grid.py": {"cxrdistill.report.plots": MATPLOTLIB},
    "report/study_report.py": {"cxrdistill.report.plots": MATPLOTLIB},
    # `cxrdistill study` imports study.stages and study.config before any stage runs (it checks the config and
    # reuses cached stages); without torch they import in about 0.6 s, with it about 4 s more
    "study/config.py": {"cxrdistill.fairkd.on_cohort": TORCH},
    "study/stages.py": dict.fromkeys(
        [f"cxrdistill.{m}" for m in ("fairkd.on_cohort", "fairkd.summary", "fairness.data", "fairness.run",
                                     "models.network", "models.speed", "pretraining.grid",
                                     "training.runs")], TORCH),
    # `cxrdistill embed` / `teacher serve` with an API teacher, and the study's config check, never load torch
    "teachers/local.py": {"cxrdistill.models.network": TORCH},
    "teachers/pretrain.py": dict.fromkeys(("cxrdistill.models.network", "cxrdistill.training.methods.teacher_pretrain"),
                                          TORCH),
}


def _imports_in_functions(module: str, path: Path) -> list[tuple[str, int]]:
    """(imported module of the package, line) for every import statement inside a function of ``path``."""
    out: list[tuple[str, int]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if in_function and isinstance(child, (ast.Import, ast.ImportFrom)):
                is_pkg = path.name == "__init__.py"
                out.extend((target, child.lineno) for target in _import_targets(module, is_pkg, child))
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(ast.parse(path.read_text(), filename=str(path)), False)
    return out


def _lazy_imports() -> dict[str, dict[str, list[int]]]:
    """{file: {imported module: [lines]}} of the package's imports inside functions, outside the entry points."""
    found: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for mod, path in MODULES.items():
        rel = path.relative_to(PKG).as_posix()
        if not rel.startswith(LAZY_OK):
            for target, line in _imports_in_functions(mod, path):
                found[rel][target].append(line)
    return found


def test_imports_of_the_package_sit_at_the_top_of_modules():
    found = _lazy_imports()
    new = [f"src/cxrdistill/{rel}:{lines[0]}: imports {target} inside a function"
           for rel, targets in sorted(found.items()) for target, lines in sorted(targets.items())
           if target not in LAZY_IMPORTS.get(rel, {})]
    assert not new, ("move these imports to the top of their module (or, for a measured start-up cost such as "
                     "matplotlib's, add them to LAZY_IMPORTS in tests/test_architecture.py with the reason):\n"
                     + "\n".join(new))
    stale = [f"{rel}: {target}" for rel, targets in sorted(LAZY_IMPORTS.items()) for target in sorted(targets)
             if target not in found.get(rel, {})]
    assert not stale, ("LAZY_IMPORTS lists imports that are no longer inside a function; delete these entries:\n"
                       + "\n".join(stale))
    assert all(why.strip() for targets in LAZY_IMPORTS.values() for why in targets.values())


def test_the_lazy_import_scan_sees_functions_methods_and_relative_imports(tmp_path):
    p = tmp_path / "m.py"
    p.write_text("from cxrdistill.errors import InputError\n"
                 "def f():\n    from cxrdistill.storage.io import read_table\n"
                 "class C:\n    def g(self):\n        if True:\n            from ..evaluation import metrics\n"
                 "    import json\n")
    assert _imports_in_functions("cxrdistill.models.m", p) == [("cxrdistill.storage.io", 3),
                                                                ("cxrdistill.evaluation.metrics", 7)]
