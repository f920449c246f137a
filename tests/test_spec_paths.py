"""Which files a spec may read: under its folder or the cwd, no hidden ones, unless the user allows more.

A shared spec must not turn ``{file: ../../.ssh/id_rsa}`` into prompts sent to a gateway it names.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.helpers import cli_env
from wanbatch.errors import SpecErrors
from wanbatch.spec import load_spec
from wanbatch.spec.paths import ALLOW_READ_ENV


def write(folder: Path, text: str, name: str = "spec.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def refused(path: Path) -> SpecErrors:
    with pytest.raises(SpecErrors) as info:
        load_spec(path)
    return info.value


@pytest.fixture
def layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A spec folder and a secret beside (not below) it; the cwd elsewhere, nothing allowed."""
    monkeypatch.delenv(ALLOW_READ_ENV, raising=False)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    (tmp_path / "secret.txt").write_text("hunter2\n")
    return tmp_path / "shared", tmp_path / "secret.txt"


def test_a_vars_file_outside_the_spec_folder_is_refused(layout: tuple[Path, Path]) -> None:
    spec_dir, secret = layout
    err = refused(write(spec_dir, "prompt: a {x}\nvars:\n  x: {file: ../secret.txt}\n"))
    assert (err.line, err.column, err.field) == (3, 13, "vars.x.file")
    assert "../secret.txt" in err.message and str(secret) in err.message
    assert "outside the spec's folder" in err.message and str(spec_dir) in err.message
    assert err.hint is not None and "--allow-read" in err.hint and "hunter2" not in str(err)


def test_an_absolute_path_and_a_rows_file_are_refused_too(layout: tuple[Path, Path]) -> None:
    spec_dir, secret = layout
    err = refused(write(spec_dir, f"prompt: a {{x}}\nvars:\n  x: {{file: {secret}}}\n"))
    assert "outside" in err.message
    secret.with_suffix(".csv").write_text("x\nhunter2\n")
    err = refused(write(spec_dir, "prompt: a {x}\nrows: {file: ../secret.csv}\n"))
    assert (err.line, err.field) == (2, "rows.file") and "outside" in err.message


def test_a_symlink_beside_the_spec_is_followed_before_the_check(layout: tuple[Path, Path]) -> None:
    spec_dir, secret = layout
    spec = write(spec_dir, "prompt: a {x}\nvars:\n  x: {file: lights.txt}\n")
    (spec_dir / "lights.txt").symlink_to(secret)
    err = refused(spec)
    assert f"lights.txt (that is {secret})" in err.message


def test_hidden_files_below_the_spec_are_refused(layout: tuple[Path, Path]) -> None:
    spec_dir, _ = layout
    (spec_dir / ".ssh").mkdir(parents=True)
    (spec_dir / ".ssh" / "keys.txt").write_text("PRIVATE\n")
    err = refused(write(spec_dir, "prompt: a {x}\nvars:\n  x: {file: .ssh/keys.txt}\n"))
    assert "hidden" in err.message and ".ssh" in err.message


def test_files_beside_the_spec_and_under_the_cwd_are_read(layout: tuple[Path, Path]) -> None:
    spec_dir, _ = layout
    write(spec_dir / "data", "fox\nowl\n", name="animals.txt")
    cwd_file = write(Path.cwd(), "red\n", name="colors.txt")
    spec = load_spec(write(spec_dir, f"prompt: a {{c}} {{x}}\nvars:\n  x: {{file: data/animals.txt}}\n"
                                     f"  c: {{file: {cwd_file}}}\n"))
    assert spec.prompts[0].vars == {"x": ["fox", "owl"], "c": ["red"]}


def test_the_home_folder_as_cwd_opens_nothing(layout: tuple[Path, Path],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    spec_dir, secret = layout
    monkeypatch.setenv("HOME", str(secret.parent))
    monkeypatch.chdir(secret.parent)  # `cd ~; wanbatch run Downloads/shared/spec.yaml`
    assert "outside" in refused(write(spec_dir, "prompt: a {x}\nvars:\n  x: {file: ../secret.txt}\n")).message


def test_the_environment_allows_a_folder(layout: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    spec_dir, secret = layout
    monkeypatch.setenv(ALLOW_READ_ENV, str(secret.parent))
    spec = load_spec(write(spec_dir, "prompt: a {x}\nvars:\n  x: {file: ../secret.txt}\n"))
    assert spec.prompts[0].vars == {"x": ["hunter2"]}


def test_the_cli_flag_allows_a_folder_and_the_spec_cannot(layout: tuple[Path, Path]) -> None:
    spec_dir, secret = layout
    spec = write(spec_dir, "prompt: a {x}\nvars:\n  x: {file: ../secret.txt}\n")
    env = cli_env()
    env.pop(ALLOW_READ_ENV, None)

    def validate(*flags: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "wanbatch", "validate", *flags, str(spec)],
                              capture_output=True, text=True, env=env, timeout=60)

    denied = validate()
    assert denied.returncode == 2 and "outside the spec's folder" in denied.stderr
    assert "Traceback" not in denied.stderr and "--allow-read" in denied.stderr
    allowed = validate("--allow-read", str(secret.parent))
    assert allowed.returncode == 0, allowed.stderr


def test_a_spec_cannot_widen_its_own_reach(layout: tuple[Path, Path]) -> None:
    spec_dir, secret = layout
    err = refused(write(spec_dir, f"allow_read: [{secret.parent}]\nprompt: a {{x}}\n"
                                  "vars:\n  x: {file: ../secret.txt}\n"))
    assert err.errors[0].field == "allow_read" and "unknown" in err.errors[0].message
