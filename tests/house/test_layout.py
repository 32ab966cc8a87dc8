"""The house rules of the source tree: no import circles, small modules, a CLI that only parses and prints,
and one place that turns a job's recorded target into a machine.

The import graph is built from the source (every import statement, inside functions too), not by
importing it, so a circle hidden in a function-level import is found as well.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("orchestrator", "trainer")
MAX_LINES = 400  # orchestrator/: about one screenful of concerns per module


def _modules(package: str) -> dict[str, Path]:
    found = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's own modules that `name` imports, wherever in the file the import statement is."""
    is_package = path.name == "__init__.py"
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import mod` imports the submodule; `from mod import name` the module.
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


def _graph() -> dict[str, set[str]]:
    modules = {name: path for package in PACKAGES for name, path in _modules(package).items()}
    return {name: _imports(name, path, set(modules)) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, result = {}, {}, [], set(), []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
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
                result.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return result


def test_no_module_imports_itself_back_through_others():
    graph = _graph()
    assert len(graph) > 50  # the graph really was built from both packages
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_circle_hidden_in_a_function(tmp_path):
    a = tmp_path / "a.py"
    a.write_text("def f():\n    from pkg import b\n")
    b = tmp_path / "b.py"
    b.write_text("import pkg.a\n")
    known = {"pkg.a", "pkg.b"}
    graph = {"pkg.a": _imports("pkg.a", a, known), "pkg.b": _imports("pkg.b", b, known)}
    assert _cycles(graph) == [["pkg.a", "pkg.b"]]


def test_orchestrator_modules_stay_small():
    long = {name: n for name, path in _modules("orchestrator").items()
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long == {}


def test_the_cli_imports_no_cloud_ssh_or_docker_code():
    graph = _graph()
    cli = [name for name in graph if name.startswith("orchestrator.cli")]
    assert cli
    for name in cli:
        path = _modules("orchestrator")[name]
        foreign = {alias for node in ast.walk(ast.parse(path.read_text())) for alias in
                   ([a.name for a in node.names] if isinstance(node, ast.Import) else
                    [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                   if alias.split(".")[0] in ("boto3", "botocore", "paramiko", "docker")}
        assert foreign == set(), name
        reaches_past_lifecycle = {m for m in graph[name] if m.split(".")[1] in ("cloud", "remote", "machines", "job")}
        assert reaches_past_lifecycle == set(), name


def test_orch_help_loads_no_aws_ssh_docker_or_torch():
    code = ("import sys; from typer.testing import CliRunner; from orchestrator.cli import app; "
            "assert CliRunner().invoke(app, ['--help']).exit_code == 0; "
            "print(sorted(m for m in ('boto3', 'botocore', 'paramiko', 'docker', 'torch', 'trainer') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"


def test_orch_never_imports_the_trainer():
    graph = _graph()
    assert {(m, t) for m, ts in graph.items() if m.startswith("orchestrator") for t in ts
            if t.startswith("trainer")} == set()


@pytest.mark.parametrize("phrase", ["endpoint is None", "local_target", "record.target"])
def test_only_lifecycle_machines_reads_where_a_job_runs(phrase):
    """job/, machines/ and the CLI never ask "is this the local one?": lifecycle/machines.py chooses the machine."""
    hits = [str(path.relative_to(ROOT)) for path in (ROOT / "orchestrator").rglob("*.py")
            if phrase in path.read_text(encoding="utf-8")
            and path.relative_to(ROOT).as_posix() != "orchestrator/lifecycle/machines.py"]
    assert hits == []
