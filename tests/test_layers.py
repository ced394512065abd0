"""The import graph of sftflow/, tasks/ and flows/ has layers, no upward arrow and no circle;
and no module there is over 400 lines (catalogues of rules aside).

`LAYERS` lists every module, bottom to top. A module may import modules of its own layer or of
layers below it, never above: basic types know nothing of storage, storage nothing of backends,
the domain nothing of Prefect's tasks and flows. Each new module must be placed here — the test
fails for a module no layer names — so where it sits is a decision, not an accident.

The graph is read with `ast` from the source files (nothing is imported), and counts every
import: at module level, inside functions (lazy) and under `if TYPE_CHECKING:` — a lazy import
hides an arrow from Python's import machinery, not from the design.
"""

from __future__ import annotations

import ast
import fnmatch
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("sftflow", "tasks", "flows")

#: Bottom to top. A pattern ending in ".*" also names the package itself (e.g. "sftflow.backends").
LAYERS: list[tuple[str, list[str]]] = [
    ("basic types: errors, progress, retry rule, results records, scores, text reading", [
        "sftflow", "sftflow.cli", "sftflow.cleanup", "sftflow.selection", "sftflow.judging", "sftflow.evaluation", "sftflow.tuning", "sftflow.cost", "sftflow.infra", "sftflow.errors", "sftflow.infra.progress", "sftflow.infra.transient", "sftflow.infra.console", "sftflow.infra.pacing",
        "sftflow.evaluation.rouge", "sftflow.data", "sftflow.data.reading", "sftflow.data.samples.*",
    ]),
    ("files and credentials, and the results records with their one reader", [
        "sftflow.infra.credentials", "sftflow.infra.gcs", "sftflow.infra.storage", "sftflow.infra.layout",
        "sftflow.evaluation.results", "sftflow.evaluation.checkpoint", "sftflow.infra.prefect_server", "sftflow.infra.lease",
    ]),
    ("dataset formats and rules, cost estimates, prices and the approval gate's rules (below the settings: a "
     "setting reaches them as an argument)", [
        "sftflow.data.rules", "sftflow.data.formats", "sftflow.data.testset", "sftflow.data.lint", "sftflow.cost.estimate",
        "sftflow.cost.prices", "sftflow.cost.approval", "sftflow.infra.time_limit",
    ]),
    ("settings: the one source of every default, and a run's parameters", ["sftflow.config", "sftflow.params",
                                                                          "sftflow.tuning.hyperparameters", "sftflow.tuning.setup"]),
    ("statistics and plots (read results, never produce them)", [
        "sftflow.evaluation.stats", "sftflow.evaluation.plots", "sftflow.selection.leaderboard", "sftflow.selection.champion",
        "sftflow.judging.pairs", "sftflow.judging.summary",
    ]),
    ("backends: the Generator/Tuner interfaces and their Vertex and local implementations", [
        "sftflow.backends.*",
    ]),
    ("records steps hand each other, and every step's markdown and tables", [
        "sftflow.selection.champion_report", "sftflow.selection.sweep_report", "sftflow.evaluation.compare_report", "sftflow.evaluation.report", "sftflow.tuning.report", "sftflow.cost.report", "sftflow.data.report", "sftflow.records", "sftflow.reporting.*",
        "sftflow.judging.report",
    ]),
    ("steps on a backend: evaluation (online and batch), tuning, polling, cleanup; one function per codelab step", [
        "sftflow.reporting.step", "sftflow.selection.sweep", "sftflow.selection.challenge", "sftflow.evaluation.compare", "sftflow.evaluation.step", "sftflow.tuning.step", "sftflow.data.prepare", "sftflow.evaluation.engine", "sftflow.evaluation.batch.*", "sftflow.tuning.intent", "sftflow.tuning.polling", "sftflow.tuning.resume", "sftflow.cleanup.plan", "sftflow.tuning.plan",
        "sftflow.selection.grid", "sftflow.cost.token_count",
        "sftflow.judging.run", "sftflow.judging.local", "sftflow.judging.vertex", "sftflow.judging.step",
    ]),
    ("preflight (`sftflow doctor`): read-only checks of credentials, Vertex AI and the bucket", [
        "sftflow.preflight.*",
    ]),
    ("Prefect tasks", ["tasks.*"]),
    ("Prefect flows", ["flows.*"]),
    ("command line: dispatches to the flows (imports them lazily, so --help needs no Prefect)", [
        "sftflow.cli.main", "sftflow.cli.config", "sftflow.cli.server", "sftflow.cli.sweep", "sftflow.cli.doctor",
        "sftflow.cli.mistakes", "sftflow.cli.interrupts",
    ]),
]

#: Modules of sftflow/ that may import flows/ (inside functions only): the command line, the top.
ENTRY_POINTS = {"sftflow.cli.main", "sftflow.cli.sweep"}

#: Small modules with one job. A catalogue (one rule after another, each with its source) may be longer.
MAX_LINES = 400
CATALOGUES = {"sftflow.data.rules", "sftflow.config"}  # config: one field after another, each with its description and limits


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _resolve(name: str) -> str | None:
    """The project module `name` refers to (a name imported from a module resolves to that module)."""
    while name:
        if name in modules():
            return name
        name = name.rpartition(".")[0]
    return None


def _imports(name: str) -> list[tuple[str, int, bool]]:
    """(imported name, line, at module level?) for every import in module `name`, relative ones resolved."""
    path = modules()[name]
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    top_level = {id(n) for n in tree.body} | {
        id(n) for stmt in tree.body if isinstance(stmt, ast.If) for n in stmt.body  # `if TYPE_CHECKING:` etc.
    }
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno, id(node) in top_level) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            out += [(f"{base}.{a.name}", node.lineno, id(node) in top_level) for a in node.names]
    return out


@cache
def graph() -> dict[str, dict[str, int]]:
    """module -> {project module it imports: line of the first such import}."""
    out: dict[str, dict[str, int]] = {}
    for name in modules():
        deps: dict[str, int] = {}
        for imported, line, _ in _imports(name):
            target = _resolve(imported)
            if target is not None and target != name:
                deps.setdefault(target, line)
        out[name] = deps
    return out


def layer_of(name: str) -> int | None:
    for i, (_, patterns) in enumerate(LAYERS):
        for pattern in patterns:
            if name == pattern or (pattern.endswith(".*") and (name == pattern[:-2] or fnmatch.fnmatch(name, pattern))):
                return i
    return None


def upward_arrows(g: dict[str, dict[str, int]]) -> list[str]:
    out = []
    for name, deps in g.items():
        for dep, line in deps.items():
            if layer_of(dep) > layer_of(name):
                out.append(f"{modules()[name].relative_to(ROOT)}:{line}: {name} (layer {layer_of(name)}, "
                           f"{LAYERS[layer_of(name)][0]!r}) imports {dep} (layer {layer_of(dep)}, "
                           f"{LAYERS[layer_of(dep)][0]!r})")
    return out


def cycles(g: dict[str, dict[str, int]]) -> list[list[str]]:
    """Every strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in g[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in g:
        if v not in index:
            visit(v)
    return found


def test_every_module_has_a_layer_and_every_pattern_a_module():
    assert [m for m in modules() if layer_of(m) is None] == []
    unused = [p for _, patterns in LAYERS for p in patterns
              if not any(m == p or (p.endswith(".*") and (m == p[:-2] or fnmatch.fnmatch(m, p))) for m in modules())]
    assert unused == []


def test_no_module_imports_from_a_higher_layer():
    assert upward_arrows(graph()) == []


def test_no_import_cycle():
    assert cycles(graph()) == []


@pytest.mark.parametrize("name", [m for m in modules() if m.split(".")[0] == "sftflow"])
def test_sftflow_imports_no_prefect_tasks_or_flows(name):
    """sftflow/ is plain Python: it never imports Prefect, and only the command line reaches the flows,
    from inside its functions."""
    for imported, line, top_level in _imports(name):
        root = imported.split(".")[0]
        where = f"{modules()[name].relative_to(ROOT)}:{line}: imports {imported}"
        assert root != "prefect", where
        if root in ("tasks", "flows"):
            assert name in ENTRY_POINTS and not top_level, where


def test_data_sits_below_the_settings():
    """The data concern needs nothing of the settings (a setting reaches it as an argument), while
    config reads data.samples for its defaults: no arrow between the two runs back up."""
    assert layer_of("sftflow.data.formats") < layer_of("sftflow.config")
    assert "sftflow.data.samples" in graph()["sftflow.config"]
    assert {m: sorted(d for d in graph()[m] if d in ("sftflow.config", "sftflow.params"))
            for m in modules() if m.startswith("sftflow.data")} == {m: [] for m in modules() if m.startswith("sftflow.data")}


def test_the_checks_see_an_upward_arrow_and_a_cycle():
    """The checks can fail: an import of a higher layer, and a circle, are both reported."""
    g = {name: dict(deps) for name, deps in graph().items()}
    g["sftflow.errors"]["sftflow.infra.storage"] = 1  # a basic type importing storage: up, and a circle
    assert any("sftflow.errors (layer 0" in a and "imports sftflow.infra.storage (layer 1" in a for a in upward_arrows(g))
    assert any({"sftflow.errors", "sftflow.infra.storage"} <= set(c) for c in cycles(g))


def test_no_module_over_400_lines_but_catalogues():
    sizes = {name: len(path.read_text(encoding="utf-8").splitlines()) for name, path in modules().items()}
    assert {name: n for name, n in sizes.items() if n > MAX_LINES and name not in CATALOGUES} == {}
