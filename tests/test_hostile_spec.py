"""Hostile specs: each fails fast with a clear spec error, never a hang, a traceback or a MemoryError."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.helpers import cli_env
from wanbatch.errors import SpecError, SpecErrors
from wanbatch.plan import EXACT_DEDUP_LIMIT, plan
from wanbatch.spec import load_spec
from wanbatch.spec.files import MAX_VARS_FILE_BYTES
from wanbatch.spec.yaml_nodes import MAX_DEPTH


def write(tmp_path: Path, text: str, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def spec_error(path: Path, within: float = 5.0) -> SpecErrors:
    started = time.monotonic()
    with pytest.raises(SpecErrors) as info:
        load_spec(path)
    assert time.monotonic() - started < within
    assert str(info.value).startswith(str(path))  # file:line:col: message, no traceback
    return info.value


# ------------------------------------------------------------------------------------------ YAML


def test_billion_laughs_is_refused_in_a_moment(tmp_path: Path) -> None:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    path = write(tmp_path, "prompt: a {x}\nvars:\n  x: [cat]\n" + "\n".join(lines) + "\n")
    err = spec_error(path, within=5.0)
    assert "alias" in str(err) and "more than" in err.message


def test_deep_nesting_is_refused_without_recursion_error(tmp_path: Path) -> None:
    depth = 5000
    path = write(tmp_path, "prompt: a {x}\nvars:\n  x: " + "[" * depth + "1" + "]" * depth + "\n")
    err = spec_error(path)
    assert f"deeper than {MAX_DEPTH}" in err.message and err.line == 3


def test_deep_block_nesting_is_refused_too(tmp_path: Path) -> None:
    text = "prompt: a cat\nx:\n" + "".join("  " * (i + 1) + f"k{i}:\n" for i in range(300))
    err = spec_error(write(tmp_path, text))
    assert "deeper than" in err.message


def test_ordinary_aliases_still_work(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, """
        prompt: "{a} {b}"
        vars:
          a: &shared [one, two]
          b: *shared
    """))
    assert spec.prompts[0].vars == {"a": ["one", "two"], "b": ["one", "two"]}


# ------------------------------------------------------------------------------------------ files


def test_a_fifo_as_vars_file_is_refused_not_waited_on(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "values.txt")
    path = write(tmp_path, "prompt: a {x}\nvars:\n  x: {file: values.txt}\n")
    err = spec_error(path, within=5.0)
    assert "not a regular file" in err.message and "values.txt" in err.message
    assert (err.line, err.field) == (3, "vars.x.file")


def test_a_device_as_vars_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "zero.txt").symlink_to("/dev/zero")
    path = write(tmp_path, "prompt: a {x}\nvars:\n  x: {file: zero.txt}\n")
    assert "outside the spec's folder" in spec_error(path).message  # /dev is not beside it
    monkeypatch.setenv("WANBATCH_ALLOW_READ", "/dev")  # even where the user allows /dev
    assert "not a regular file" in spec_error(path).message


def test_a_huge_vars_file_is_refused_before_reading(tmp_path: Path) -> None:
    with (tmp_path / "big.txt").open("wb") as fh:  # sparse: costs no disk
        fh.truncate(MAX_VARS_FILE_BYTES + 1)
    err = spec_error(write(tmp_path, "prompt: a {x}\nvars:\n  x: {file: big.txt}\n"))
    assert f"at most {MAX_VARS_FILE_BYTES}" in err.message


def test_a_fifo_as_the_spec_is_refused(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "spec.yaml")
    done = threading.Event()
    result: list[BaseException] = []

    def load() -> None:
        try:
            load_spec(tmp_path / "spec.yaml")
        except SpecError as exc:
            result.append(exc)
        done.set()

    threading.Thread(target=load, daemon=True).start()
    assert done.wait(5.0), "load_spec waited on a FIFO"
    assert "not a regular file" in str(result[0])


# ------------------------------------------------------------------------------------------ prompts


def test_a_huge_format_width_is_refused_before_rendering(tmp_path: Path) -> None:
    path = write(tmp_path, 'prompt: "{x:>2000000000}"\nvars:\n  x: [cat]\n')
    err = spec_error(path, within=2.0)
    assert (err.line, err.field) == (1, "prompt")
    assert "2000000000" in err.message and "at most 5000" in err.message


def test_a_format_width_taken_from_a_var_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, 'prompt: "{x:>{w}}"\nvars:\n  x: [cat]\n  w: ["2000000000"]\n')
    err = spec_error(path, within=2.0)
    assert "takes its format from a var" in err.message


def test_modest_format_specs_still_render(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, 'prompt: "{x:>8}|{x:.2}"\nvars:\n  x: [cat]\n'))
    assert spec.prompts[0].template == "{x:>8}|{x:.2}"


def test_the_longest_combination_is_found_without_expanding_the_product(tmp_path: Path) -> None:
    # 3 vars × 1000 values: 10⁹ prompts; only one combination (the three long values) is too long.
    values = {name: [f"{name}{i}" for i in range(1000)] for name in "abc"}
    for name in "abc":
        values[name][500] = name * 1700
    lines = ['prompt: "{a} {b} {c}"', "vars:"]
    lines += [f"  {name}: [{', '.join(vals)}]" for name, vals in values.items()]
    err = spec_error(write(tmp_path, "\n".join(lines) + "\n"), within=10.0)
    assert "up to 5102 characters" in err.message and "at most 5000" in err.message


def test_zipped_vars_count_their_rows_not_their_longest_values(tmp_path: Path) -> None:
    # a's and b's longest values never meet: zipped, the longest prompt is 3000 + 1 + 1.
    text = f'prompt: "{{a}} {{b}}"\nvars:\n  a: ["{"a" * 3000}", x]\n  b: [y, "{"b" * 3000}"]\nzip: [a, b]\n'
    spec = load_spec(write(tmp_path, text))
    assert spec.prompts[0].zip == [["a", "b"]]
    err = spec_error(write(tmp_path, text.replace("zip: [a, b]\n", ""), "unzipped.yaml"))
    assert "6001 characters" in err.message


def test_a_long_value_in_a_vars_file_is_found(tmp_path: Path) -> None:
    (tmp_path / "subjects.txt").write_text("a cat\n" + "x" * 6000 + "\n", encoding="utf-8")
    err = spec_error(write(tmp_path, 'prompt: "{s}"\nvars:\n  s: {file: subjects.txt}\n'))
    assert "6000 characters" in err.message and "s='xxx" in (err.hint or "")


# ------------------------------------------------------------------------------------------ 10⁹ jobs

# The CLI's own peak RSS: VmHWM belongs to the process's memory map, which exec replaces (ru_maxrss
# would also count the pytest process this one was forked from).
_PEAK_RSS = (
    "import re, runpy, sys\n"
    "sys.argv = ['wanbatch', *sys.argv[1:]]\n"
    "try:\n"
    "    runpy.run_module('wanbatch', run_name='__main__')\n"
    "finally:\n"
    "    hwm = re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)\n"
    "    print('PEAK_RSS_KB', hwm, file=sys.stderr)\n"
)


def _billion_jobs_spec(tmp_path: Path) -> Path:
    values = {name: "[" + ", ".join(f"{name}{i}" for i in range(1000)) + "]" for name in "abc"}
    return write(tmp_path, f"""
        name: billion
        prompt: "{{a}} {{b}} {{c}}"
        vars:
          a: {values["a"]}
          b: {values["b"]}
          c: {values["c"]}
        sizes: [1K]
        limits: {{max_images: 2}}
        output: {tmp_path / "out"}
    """)


def _cli(*args: str) -> tuple[subprocess.CompletedProcess[str], int]:
    proc = subprocess.run([sys.executable, "-c", _PEAK_RSS, *args], capture_output=True, text=True,
                          timeout=120, env=cli_env(), cwd=Path(__file__).parent.parent)
    peak = int(proc.stderr.rsplit("PEAK_RSS_KB", 1)[1].split()[0])
    assert peak > 20_000  # a real measurement: Python with wanbatch loaded takes more than 20 MB
    return proc, peak


def test_a_billion_jobs_validate_plan_and_run_under_max_images_in_constant_memory(tmp_path: Path) -> None:
    spec = _billion_jobs_spec(tmp_path)
    proc, peak = _cli("validate", str(spec))
    assert proc.returncode == 0 and "1000000000 jobs" in proc.stdout, proc.stdout + proc.stderr
    assert peak < 400_000
    proc, peak = _cli("plan", str(spec), "--json")
    report = json.loads(proc.stdout)
    assert (report["jobs"], report["samples"][:2]) == (10**9, ["a0 b0 c0", "a0 b0 c1"])
    assert peak < 400_000
    proc, peak = _cli("run", str(spec), "--json")
    assert proc.returncode == 3, proc.stdout + proc.stderr  # stopped by max_images (the dataset's cap)
    assert "cap reached: limits.max_images 2" in proc.stdout + proc.stderr
    assert len(pq.read_table(tmp_path / "out" / "index").to_pylist()) == 2
    assert peak < 500_000
    # with a dataset in place, `plan` still answers at once rather than comparing 10⁹ jobs with it
    proc, _ = _cli("plan", str(spec), "--json")
    assert "too many to compare" in json.loads(proc.stdout)["existing_not_compared"]


def test_counts_are_exact_below_the_dedup_limit_and_arithmetic_above(tmp_path: Path) -> None:
    # "{a}{b}": a=x,b=yz and a=xy,b=z render alike; repeated values are repeats.
    small = load_spec(write(tmp_path, 'prompt: "{a}{b}"\nvars:\n  a: [x, xy, x]\n  b: [yz, z]\n'))
    assert plan(small).job_count == len(list(plan(small).jobs())) == 3  # xyz, xz, xyyz
    n = 800  # 800 × 800 = 640 000 combinations > EXACT_DEDUP_LIMIT
    assert n * n > EXACT_DEDUP_LIMIT
    values = lambda p: "[" + ", ".join(f"{p}{i}" for i in range(n)) + f", {p}0]"  # noqa: E731
    big = load_spec(write(tmp_path, f'prompt: "{{a}} {{b}}"\nvars:\n  a: {values("a")}\n  b: {values("b")}\n',
                          "big.yaml"))
    the_plan = plan(big)
    assert not the_plan.exact and the_plan.job_count == n * n  # the repeated value is dropped
    first = list(itertools.islice(the_plan.jobs(), n + 1))
    assert [j.prompt for j in first[n - 1:]] == [f"a0 b{n - 1}", "a1 b0"]  # "b0" came once


def test_identical_prompt_entries_are_planned_once(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, """
        prompts:
          - {template: "a {x}", vars: {x: [cat, dog]}}
          - {template: "a {x}", vars: {x: [cat, dog]}}
        seeds: [1, 2]
    """))
    assert plan(spec).job_count == len(list(plan(spec).jobs())) == 4


# ------------------------------------------------------------------------------------------ limits


def test_download_limits_have_defaults_and_accept_units(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, "prompt: a cat\n"))
    assert (spec.limits.max_image_bytes, spec.limits.min_download_rate) == (64 << 20, 32 << 10)
    spec = load_spec(write(tmp_path, 'prompt: a cat\n'
                                     'limits: {max_image_bytes: 8MiB, min_download_rate: "100 KB/s"}\n'))
    assert (spec.limits.max_image_bytes, spec.limits.min_download_rate) == (8 << 20, 100_000)
    err = spec_error(write(tmp_path, "prompt: a cat\nlimits: {max_image_bytes: lots}\n"))
    assert err.field == "limits.max_image_bytes" and "64MB" in (err.hint or "")


@pytest.mark.parametrize(("name", "content", "message"), [
    ("cells.csv", "x\n" + "a" * 200_000 + "\n", "field larger than field limit"),
    ("deep.jsonl", '{"x": ' + "[" * 100_000 + "]" * 100_000 + "}\n", "nested too deeply"),
    ("number.jsonl", '{"x": ' + "9" * 10_000 + "}\n", "too many digits"),
])
def test_hostile_vars_file_contents_are_spec_errors(tmp_path: Path, name: str, content: str,
                                                    message: str) -> None:
    (tmp_path / name).write_text(content, encoding="utf-8")
    err = spec_error(write(tmp_path, f"prompt: a {{x}}\nvars:\n  x: {{file: {name}}}\n"))
    assert message in err.message and name in err.message and err.field == "vars.x.file"


@pytest.mark.parametrize(("value", "message"), [
    ("9" * 10_000, "too many digits"),
    ("2001-02-30", "day is out of range"),
])
def test_unreadable_yaml_scalars_are_located_spec_errors(tmp_path: Path, value: str, message: str) -> None:
    err = spec_error(write(tmp_path, f"prompt: a cat\ndescription: {value}\n"))
    assert (err.line, err.column, err.field) == (2, 14, "description") and message in err.message
