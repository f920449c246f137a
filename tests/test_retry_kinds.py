"""`--retry-failed` takes kinds or kind classes; kinds say refusal, transient or ambiguous apart."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tests.helpers import cli_env
from wanbatch.errors import KIND_CLASSES, kind_class
from wanbatch.resume import RETRY_ON_RESUME, retried

SPEC = """
    name: kinds
    provider: {{type: mock, latency: 0}}
    prompt: "a {{thing}}"
    vars:
      thing: [fox, forbidden-word]
    sizes: [1K]
    output: {output}
"""


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "wanbatch", *args], capture_output=True, text=True,
                          timeout=60, env=cli_env(), check=False)


def test_every_kind_has_one_class_and_the_classes_decide_a_rerun() -> None:
    kinds = [k for group in KIND_CLASSES.values() for k in group]
    assert len(kinds) == len(set(kinds))
    assert kind_class("moderation") == "refused" and kind_class("timeout") == "ambiguous"
    assert kind_class("proxy_timeout") == "ambiguous" and kind_class("server_error") == "transient"
    assert set(KIND_CLASSES["transient"]) == RETRY_ON_RESUME
    assert not retried("moderation", False) and retried("server_error", False)
    assert retried("moderation", True) and retried("moderation", {"refused"})
    assert retried("timeout", {"timeout"}) and not retried("moderation", {"timeout", "ambiguous"})


def test_retry_failed_with_kinds_on_the_command_line(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    spec = str(write_spec(SPEC.format(output=tmp_path / "out")))
    first = cli("run", spec, "--json")
    assert first.returncode == 1, first.stderr  # the moderated slot failed
    assert json.loads(first.stdout)["errors_by_kind"] == {"moderation": 1}

    other = cli("run", spec, "--json", "--retry-failed", "timeout,ambiguous")
    assert other.returncode == 0, other.stderr
    assert json.loads(other.stdout)["submitted_images"] == 0  # a refusal is not of those kinds

    again = cli("run", spec, "--json", "--retry-failed", "moderation")
    assert again.returncode == 1
    assert json.loads(again.stdout)["submitted_images"] == 1

    bad = cli("run", spec, "--retry-failed", "moderaton")
    assert bad.returncode == 2
    assert "unknown kind moderaton" in bad.stderr and "refused, transient, ambiguous" in bad.stderr

    table = cli("run", spec, "--retry-failed", "--no-progress")
    assert table.returncode == 1
    assert "refused (same answer again)" in table.stdout and "moderation 1" in table.stdout
    assert table.stdout.count("ambiguous") == 0  # no ambiguous outcome: the word does not appear
