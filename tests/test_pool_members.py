"""Each member of a provider pool is itself: its images are downloaded through its client and under its
gateway's rules (a loopback gateway's loopback links are fetched even when the first member is a public
gateway), the links it delivered and could not download are journaled under its name so a rerun fetches
them the same way, and `wanbatch probe` checks and reports every member.

The public member is ``http://gateway-a.invalid/v1``: an unresolvable host counts as public, and with
weights 1 : 1000 the smooth round-robin never sends it a request in these small runs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

import wanbatch
from tests.helpers import cli_env
from tests.helpers.chaos import mock_stats
from wanbatch.dataset.journal import read_journal
from wanbatch.mock import MockConfig, run_in_thread
from wanbatch.probe import probe_path, seed_warning
from wanbatch.runner import RunOptions, RunResult
from wanbatch.runner.paid import gateway_of

pytestmark = pytest.mark.timeout(60)

KEYS = {"MEMBER_KEY_A": "sk-member-a-5e0c8d21f7b3", "MEMBER_KEY_B": "sk-member-b-93d1aa6c0e57",
        "MEMBER_KEY_C": "sk-member-c-2b7f40e9c18d"}
FAR = "http://gateway-a.invalid/v1"  # a public gateway (as the download rules see it), never asked
POSTS = "/v1/images/generations"


@pytest.fixture
def gateway() -> Iterator[Callable[..., str]]:
    """Start a loopback mock gateway expecting ``key`` (a KEYS name); yields its base URL."""
    with ExitStack() as stack:

        def start(key: str, **config: Any) -> str:
            settings = {"scale": 1 / 16, "image_kb": 2.0, "api_key": KEYS[key], **config}
            return stack.enter_context(run_in_thread(MockConfig(**settings)))

        yield start


def write(tmp_path: Path, members: str, *, name: str = "spec.yaml", seeds: int = 2) -> tuple[Path, Path]:
    out = tmp_path / "out"
    spec = tmp_path / name
    spec.write_text(f"""
name: members
provider:
  name: pooled
  pool:
{members}
prompt: "a lighthouse, {{style}}"
vars: {{style: [ink, chalk]}}
seeds: {{start: 0, count: {seeds}}}
sizes: [1K]
limits: {{concurrency: 4, retries: 2}}
price_per_image: 0.5
output: {out}
""", encoding="utf-8")
    return spec, out


def member(name: str, base_url: str, key: str, weight: int) -> str:
    return f"    - {{name: {name}, base_url: '{base_url}', api_key_env: {key}, weight: {weight}}}\n"


def run(spec: Path) -> RunResult:
    return wanbatch.run(wanbatch.load_spec(spec),
                        RunOptions(env=dict(KEYS), backoff_initial=0.01, backoff_max=0.05))


def rows(out: Path) -> list[dict[str, Any]]:
    return pq.read_table(out / "index").to_pylist()


def journaled_links(out: Path) -> dict[str, Any]:
    links: dict[str, Any] = {}
    for folder in (out / "journal").iterdir():
        if folder.is_dir() and not folder.name.startswith("."):
            links.update(read_journal(folder / "tasks.jsonl")[1])
    return links


# ----------------------------------------------------------------------------------------- downloads


def test_a_members_images_are_downloaded_under_its_own_gateways_rules(
        tmp_path: Path, gateway: Callable[..., str]) -> None:
    near = gateway("MEMBER_KEY_B")
    spec, out = write(tmp_path, member("far", FAR, "MEMBER_KEY_A", 1)
                      + member("near", f"{near}/v1", "MEMBER_KEY_B", 1000))
    result = run(spec)
    # near is on loopback and so are its links: its rules allow them (the first member's would not)
    assert result.exit_code == 0, (result.error, result.summary.errors_by_kind)
    got = rows(out)
    assert len(got) == 4 and {(r["status"], r["provider"]) for r in got} == {("ok", "near")}
    assert mock_stats(near)["billed"] == 4


def test_links_a_member_delivered_are_kept_under_its_name_and_the_rerun_fetches_them_through_it(
        tmp_path: Path, gateway: Callable[..., str]) -> None:
    near = gateway("MEMBER_KEY_B", file_fail_first={"500": 3})  # retries (2) run out in the first run
    spec, out = write(tmp_path, member("far", FAR, "MEMBER_KEY_A", 1)
                      + member("near", f"{near}/v1", "MEMBER_KEY_B", 1000))
    first = run(spec)
    assert first.exit_code == 1 and first.summary.errors_by_kind == {"download": 4}
    kept = journaled_links(out)
    assert len(kept) == 4
    assert {(p.provider, p.gateway) for p in kept.values()} == {("near", gateway_of(f"{near}/v1"))}
    again = run(spec)
    assert again.exit_code == 0, (again.error, again.summary.errors_by_kind)
    assert again.summary.paid_downloads == 4
    stats = mock_stats(near)
    assert stats["billed"] == 4 and stats["requests"][POSTS] == 4  # fetched, never paid again
    ok = [r for r in rows(out) if r["status"] == "ok"]
    assert len(ok) == 4 and {r["provider"] for r in ok} == {"near"}


def test_a_rerun_without_the_member_says_so_and_fetches_under_the_first_members_rules(
        tmp_path: Path, gateway: Callable[..., str]) -> None:
    near = gateway("MEMBER_KEY_B", file_fail_first={"500": 3})
    spec, out = write(tmp_path, member("far", FAR, "MEMBER_KEY_A", 1)
                      + member("near", f"{near}/v1", "MEMBER_KEY_B", 1000))
    assert run(spec).summary.errors_by_kind == {"download": 4}
    other = gateway("MEMBER_KEY_C")  # near's object store still serves its links
    spec2, _ = write(tmp_path, member("other", f"{other}/v1", "MEMBER_KEY_C", 1000)
                     + member("far", FAR, "MEMBER_KEY_A", 1), name="without.yaml")
    again = run(spec2)
    assert again.exit_code == 0, (again.error, again.summary.errors_by_kind)
    assert again.summary.paid_downloads == 4
    said = [n for n in again.notes if "images paid for through near" in n]
    assert len(said) == 1 and "not one of this run's providers" in said[0] and "through other" in said[0]
    assert mock_stats(near)["billed"] == 4 and mock_stats(other)["billed"] == 0  # nothing paid again
    assert not any(key in " ".join(again.notes) for key in KEYS.values())
    ok = [r for r in rows(out) if r["status"] == "ok"]
    assert len(ok) == 4 and {r["provider"] for r in ok} == {"near"}  # the member that generated them


# ----------------------------------------------------------------------------------------- probe


def test_probe_checks_every_member_and_reports_each_without_a_key(
        tmp_path: Path, gateway: Callable[..., str]) -> None:
    good = gateway("MEMBER_KEY_A")
    refusing = gateway("MEMBER_KEY_B", api_key="sk-not-the-one-it-is-given-0000")  # refuses its key
    spec, _ = write(tmp_path, member("good", f"{good}/v1", "MEMBER_KEY_A", 1)
                    + member("refusing", f"{refusing}/v1", "MEMBER_KEY_B", 1))
    done = subprocess.run([sys.executable, "-m", "wanbatch", "probe", str(spec), "--yes"],
                          capture_output=True, text=True, timeout=60, env=cli_env(**KEYS))
    said = done.stdout + done.stderr
    assert done.returncode == 1, said  # one member failed a check
    assert "6 requests to 2 members of pooled (3 each: good, refusing)" in " ".join(done.stderr.split())
    good_host, refusing_host = good.removeprefix("http://"), refusing.removeprefix("http://")
    assert f"probe: good at {good_host}" in said and f"probe: refusing at {refusing_host}" in said
    assert "1 of 2 members passed; failed: refusing" in said
    assert not any(key in said for key in KEYS.values())
    posts = {base: mock_stats(base)["requests"].get(POSTS, 0) for base in (good, refusing)}
    assert posts == {good: 3, refusing: 1}  # a refused key stops that member's probe, not the others'
    saved = json.loads(probe_path(spec).read_text())
    assert [(m["provider"], m["base_url"]) for m in saved["members"]] == [
        ("good", f"{good}/v1"), ("refusing", f"{refusing}/v1")]
    by_name = {m["provider"]: m["checks"]["key accepted"]["status"] for m in saved["members"]}
    assert by_name == {"good": "ok", "refusing": "failed"}
    assert saved["seed"] == "unverified"  # the pool's seed verdict: honoured only if every member's is
    assert not any(key in probe_path(spec).read_text() for key in KEYS.values())
    warning = seed_warning(wanbatch.load_spec(spec), spec) or ""  # what plan and run warn of
    assert "member(s) refusing (unverified) of pooled" in warning
