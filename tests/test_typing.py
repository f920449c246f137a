"""The package type-checks (mypy): the typed public API is part of the product."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_mypy_is_clean_over_the_package() -> None:
    """mypy's own incremental cache (``.mypy_cache``, as a plain ``mypy wanbatch`` leaves it) is sound:
    a module is checked again whenever it or a dependency changed. A cold check (CI's) costs ~25 s of
    CPU, a warm one ~1 s."""
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "wanbatch"],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


PUBLIC_USE = '''
from pathlib import Path

import pyarrow as pa

import wanbatch
from wanbatch import Job, Plan, RunOptions, RunResult, RunSummary, Spec, WanbatchError


def count(path: str) -> int:
    spec: Spec = wanbatch.load_spec(path)
    p: Plan = wanbatch.plan(spec, shard=(0, 2))
    first: Job = next(p.jobs())
    same = wanbatch.job_id(first.model, first.prompt, first.size, first.seed, first.n, first.params)
    assert same == first.job_id
    return p.job_count + p.image_count


def go(spec: Spec, out: Path) -> int:
    try:
        result: RunResult = wanbatch.run(spec, RunOptions(output=str(out), retry_failed=True))
    except WanbatchError as exc:
        return exc.exit_code
    table: pa.Table = wanbatch.read_index(result.root, ["image_id", "status"])
    summary: RunSummary = result.summary
    # pyarrow is untyped
    rows: int = summary.done_images + table.num_rows + wanbatch.open_index(result.root).count_rows()
    return result.exit_code + rows


async def go_async(spec: Spec) -> int:
    return (await wanbatch.run_async(spec)).exit_code


version: str = wanbatch.__version__
'''


def test_the_public_api_passes_mypy_strict(tmp_path: Path) -> None:
    """A user's file that calls the public API type-checks under --strict (errors in wanbatch's own
    modules are left to the test above: only the user's side is judged here)."""
    user = tmp_path / "use_wanbatch.py"
    user.write_text(PUBLIC_USE, encoding="utf-8")
    broken = tmp_path / "broken.py"
    broken.write_text("import wanbatch\n\nn: str = wanbatch.plan(wanbatch.load_spec('x')).job_count\n")
    # One mypy run for both files (wanbatch is analysed once): mypy reports per file, so the user's file
    # must have no line of its own and the broken one exactly its error. A fresh cache: a kept one
    # replays a moved file's old errors under its old path.
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent", "--cache-dir",
         str(tmp_path / "mypy-cache"), str(user), str(broken)],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert user.name not in proc.stdout, proc.stdout  # the user's side passes --strict
    errors = [line for line in proc.stdout.splitlines() if ": error:" in line]
    assert len(errors) == 1 and errors[0].startswith(f"{broken}:3:") and 'type "int"' in errors[0], \
        proc.stdout  # the API's types are seen


def test_public_names_resolve_and_no_module_imports_the_package_face() -> None:
    import wanbatch

    for name in wanbatch.__all__:
        assert getattr(wanbatch, name) is not None, name
    assert (ROOT / "wanbatch" / "py.typed").is_file()
    package = ROOT / "wanbatch"
    offenders = []
    for path in package.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        if parts == ["wanbatch"]:
            continue
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import) and any(a.name == "wanbatch" for a in node.names):
                offenders.append(f"{path.name}:{node.lineno}")
            if isinstance(node, ast.ImportFrom):
                base = parts if is_package else parts[:-1]
                target = ".".join(base[: len(base) - node.level + 1]) if node.level else (node.module or "")
                if node.level and node.module:
                    target = f"{target}.{node.module}"
                submodules = all((package / f"{a.name}.py").exists() or (package / a.name).is_dir()
                                 for a in node.names)
                if target == "wanbatch" and not submodules:
                    offenders.append(f"{path.name}:{node.lineno}")
    assert offenders == []
