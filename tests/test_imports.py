"""The package's import graph has no cycle, counting imports inside functions too (a lazy import
only hides a cycle), but not those under ``if TYPE_CHECKING:`` (never run). Commands start without
heavy modules they do not use (pandas, aiohttp, Ray, ...): the tests spawn hundreds of them."""

from __future__ import annotations

import ast
import functools
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.parquet as pq

import wanbatch
from tests.helpers import cli_env

PACKAGE = Path(wanbatch.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _type_checking_only(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Modules of the package that ``name`` imports (``from .x import y`` counts x, and x.y if a module)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if _type_checking_only(node):
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return {m for m in found if m in known and m != name}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 visiting, 2 done
    stack: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state and (cycle := dfs(nxt)) is not None:
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := dfs(node)) is not None:
            return cycle
    return None


@functools.cache  # parsed once for the three tests below
def package_graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    graph = {name: imports_of(name, path, known) for name, path in mods.items()}
    # importing a submodule runs its package's __init__ first: not a cycle of ours to count
    return {n: {m for m in deps if not n.startswith(m + ".")} for n, deps in graph.items()}


def test_the_checker_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_in_the_dataset_package() -> None:
    graph = package_graph()
    dataset = {n: {m for m in d if m.startswith("wanbatch.dataset")} for n, d in graph.items()
               if n.startswith("wanbatch.dataset")}
    assert find_cycle(dataset) is None


def test_no_import_cycle_in_wanbatch() -> None:
    assert find_cycle(package_graph()) is None


#: (importer prefix, forbidden prefix): data flows spec → plan → runner → provider → dataset.
LAYERS = [
    ("wanbatch.providers", "wanbatch.dataset"),
    ("wanbatch.providers", "wanbatch.mock"),
    ("wanbatch.spec", "wanbatch.mock"),
    ("wanbatch.spec", "wanbatch.runner"),
    ("wanbatch.plan", "wanbatch.runner"),
    ("wanbatch.runner", "wanbatch.cli"),
    ("wanbatch.dataset", "wanbatch.runner"),
    ("wanbatch.dataset", "wanbatch.providers"),
]


def test_modules_import_only_downstream() -> None:
    graph = package_graph()
    def within(module: str, prefix: str) -> bool:
        return module == prefix or module.startswith(prefix + ".")

    wrong = sorted(f"{name} imports {dep}" for name, deps in graph.items() for dep in deps
                   for importer, forbidden in LAYERS if within(name, importer) and within(dep, forbidden))
    assert wrong == []


#: Installed for the tests (or by other extras) but needed by none of plan, run on the mock, status.
HEAVY = ("pandas", "aiohttp", "httpx_aiohttp", "ray", "datasets", "polars", "duckdb", "boto3", "moto")
#: Runs the CLI in this interpreter and reports, at exit, which of HEAVY the command imported.
_REPORT = (
    "import atexit, sys\n"
    "names = sys.argv.pop(1).split(',')\n"
    "atexit.register(lambda: print('imported:', *[m for m in names if m in sys.modules], file=sys.stderr))\n"
    "from wanbatch.cli import main\n"
    "main()\n"
)


def heavy_imports(*args: str, cwd: Path) -> list[str]:
    done = subprocess.run([sys.executable, "-c", _REPORT, ",".join(HEAVY), *args], capture_output=True,
                          text=True, env=cli_env(), cwd=cwd, timeout=120)
    assert done.returncode == 0, done.stderr
    line = [x for x in done.stderr.splitlines() if x.startswith("imported:")][-1]
    return line.split()[1:]


def test_commands_start_without_pandas_or_aiohttp(tmp_path: Path) -> None:
    """pyarrow imports pandas, when installed, the first time it converts Python objects (0.6 s), and
    aiohttp costs 0.3 s: plan, a run on the mock and status go without both."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(textwrap.dedent("""
        name: light
        provider: mock
        prompt: "a {thing}"
        vars: {thing: [cat, dog]}
        seeds: [1, 2]
        output: out
    """), encoding="utf-8")
    assert heavy_imports("plan", str(spec), cwd=tmp_path) == []
    assert heavy_imports("run", "--no-progress", str(spec), cwd=tmp_path) == []
    assert pq.read_table(tmp_path / "out" / "index").num_rows == 4  # the run did write the dataset
    assert heavy_imports("status", "out", cwd=tmp_path) == []


def test_the_report_sees_what_was_imported(tmp_path: Path) -> None:
    """The check above can fail: a module the command did import is reported, one it did not is not."""
    done = subprocess.run([sys.executable, "-c", _REPORT, "wanbatch.cli,pandas", "--version"],
                          capture_output=True, text=True, env=cli_env(), timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines()[-1] == "imported: wanbatch.cli"
