"""Work an earlier run paid for is finished, not paid again: images whose download failed are
downloaded by the rerun from their journaled links (CDN redirects followed, never with the key), and
async tasks are polled by a rerun whose provider was renamed or whose host is spelled differently. A
real loopback gateway (the mock) counts what it bills."""

from __future__ import annotations

import functools
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

import wanbatch
from tests.helpers import cli_env
from tests.helpers.chaos import mock_stats, posts_reached
from tests.helpers.servers import serve_app
from tests.helpers.specs import gateway_spec
from wanbatch.dataset import DatasetView, DatasetWriter, status
from wanbatch.dataset.journal import read_journal
from wanbatch.mock import MockConfig, create_app, run_in_thread
from wanbatch.runner import RunOptions
from wanbatch.runner.paid import gateway_of

KEY_ENV = "WANBATCH_TEST_KEY"
KEY = "sk-paid-9a8b7c6d5e4f3a2b1c"
POSTS = "/v1/images/generations"
FILES = "/files/{token}"

write_spec = functools.partial(gateway_spec, label="paid", key_env=KEY_ENV, seeds=2,
                               subject="a harbour")


def run(spec: Path, **options: Any) -> wanbatch.RunResult:
    return wanbatch.run(wanbatch.load_spec(spec), RunOptions(env={KEY_ENV: KEY}, backoff_initial=0.01,
                                                             backoff_max=0.05, **options))


def small(**config: Any) -> MockConfig:
    return MockConfig(**{"scale": 1 / 16, "image_kb": 2, **config})


def rows(out: Path) -> list[dict[str, Any]]:
    return list(wanbatch.read_index(out).to_pylist())


def journaled(out: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    tasks: dict[str, Any] = {}
    links: dict[str, Any] = {}
    for folder in (out / "journal").iterdir():
        if folder.is_dir() and not folder.name.startswith("."):
            found_tasks, found_links = read_journal(folder / "tasks.jsonl")
            tasks.update(found_tasks)
            links.update(found_links)
    return tasks, links


# ----------------------------------------------------------------------------------- the gateway's identity


@pytest.mark.parametrize(("a", "b"), [
    ("http://127.0.0.1:8080/v1", "http://localhost:8080/v1/"),
    ("http://[::1]:8080/v1", "HTTP://LOCALHOST:8080/v1"),
    ("https://Gateway.Example/v1", "https://gateway.example:443/v1"),
])
def test_one_gateway_spelled_two_ways_is_one_gateway(a: str, b: str) -> None:
    assert gateway_of(a) == gateway_of(b)


@pytest.mark.parametrize(("a", "b"), [
    ("http://127.0.0.1:8080/v1", "http://127.0.0.1:8081/v1"),
    ("https://a.example/v1", "https://b.example/v1"),
    ("https://a.example/v1", "https://a.example/compatible-mode/v1"),
    ("http://a.example/v1", "https://a.example/v1"),
])
def test_different_gateways_differ(a: str, b: str) -> None:
    assert gateway_of(a) != gateway_of(b)


# ----------------------------------------------------------------------------------- paid downloads


def test_a_failed_download_is_downloaded_by_the_rerun_without_paying_again(tmp_path: Path) -> None:
    # Every image's first three downloads get a 500 from the object store: retries (2) run out.
    with run_in_thread(small(file_fail_first={"500": 3})) as base:
        spec, out = write_spec(tmp_path, base)
        first = run(spec)
        assert first.exit_code == 1 and first.summary.errors_by_kind == {"download": 4}
        assert mock_stats(base)["billed"] == 4
        failed = [r for r in rows(out) if r["status"] == "failed"]
        assert {r["error_kind"] for r in failed} == {"download"}
        assert all("/files/" in r["error_message"] and "its link is kept" in r["error_message"]
                   for r in failed)
        _, links = journaled(out)
        assert sum(len(p.links) for p in links.values()) == 4  # the links, where only the journal has them
        assert status(out).paid_not_downloaded == 4  # `wanbatch status` says so
        again = run(spec)
        stats = mock_stats(base)
        assert again.exit_code == 0 and again.summary.paid_downloads == 4
        assert stats["billed"] == 4 and stats["requests"][POSTS] == 4  # no new generation
        assert any("downloaded 4 image(s) paid for earlier" in note for note in again.notes)
    ok = [r for r in rows(out) if r["status"] == "ok"]
    assert len({r["image_id"] for r in ok}) == 4
    assert all("paid for" in (r["error_message"] or "") for r in ok)
    assert journaled(out)[1] == {}  # used up: forgotten
    assert status(out).paid_not_downloaded == 0
    account = DatasetView.open(out).ledger()  # what `wanbatch status --json` reports
    assert account.billed_images == 4 and account.in_doubt_images == 0


def test_an_expired_link_is_generated_again_and_the_run_says_why(tmp_path: Path) -> None:
    with run_in_thread(small(file_fail_first={"500": 3})) as base:
        spec, out = write_spec(tmp_path, base, seeds=1, limits="link_life: 1s")
        first = run(spec)
        assert first.summary.errors_by_kind == {"download": 2} and mock_stats(base)["billed"] == 2
        time.sleep(1.2)  # past the links' life
        again = run(spec)
        assert again.exit_code == 0 and again.summary.paid_downloads == 0
        assert again.summary.regenerated_expired == 2
        assert mock_stats(base)["billed"] == 4  # paid again: the only way to the images now
        assert any("generated 2 image(s) again" in note and "expired" in note for note in again.notes)
    ok = [r for r in rows(out) if r["status"] == "ok"]
    assert len(ok) == 2 and all("link has expired" in r["error_message"] for r in ok)


def test_an_object_store_403_is_downloaded_by_the_rerun_within_the_links_life(tmp_path: Path) -> None:
    with run_in_thread(small(file_fail_first={"403": 1})) as base:
        spec, out = write_spec(tmp_path, base, seeds=1)
        first = run(spec)
        assert first.summary.errors_by_kind == {"url_expired": 2}  # not retried in the run
        again = run(spec)  # a refused kind, yet fetched: a download costs nothing
        assert again.exit_code == 0 and again.stats.paid_downloads == 2
        assert mock_stats(base)["billed"] == 2
    assert sum(r["status"] == "ok" for r in rows(out)) == 2


def test_a_link_the_object_store_calls_gone_again_is_left_failed_not_paid_again(tmp_path: Path) -> None:
    with run_in_thread(small(file_fail_first={"403": 2})) as base:
        spec, out = write_spec(tmp_path, base, seeds=1)
        run(spec)
        again = run(spec)
        assert again.exit_code == 1 and again.summary.errors_by_kind == {"url_expired": 2}
        assert again.summary.paid_downloads == 0 and mock_stats(base)["billed"] == 2
        assert mock_stats(base)["requests"][FILES] == 4  # each link tried once per run
        assert journaled(out)[1] == {}  # gone: not kept
        third = run(spec)  # left failed (a refused kind): nothing is requested
        assert third.summary.todo_images == 0 and mock_stats(base)["billed"] == 2


class _Cdn:
    """The gateway's file links go through ``hops`` redirects: the first from the gateway itself, the
    others on a second loopback server (the CDN), which records every request's headers."""

    def __init__(self) -> None:
        self.hops = 3
        self.seen: list[dict[str, str]] = []
        self.gateway = ""
        self.cdn = ""

    def wrap(self, app: Any) -> Any:
        async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
            path = scope.get("path", "")
            first = b"direct" not in scope.get("query_string", b"")
            if scope["type"] == "http" and path.startswith("/files/") and first:
                target = self._next(self.hops - 1, path.removeprefix("/files/"))
                await RedirectResponse(target, status_code=302)(scope, receive, send)
                return
            await app(scope, receive, send)

        return wrapped

    def _next(self, left: int, token: str) -> str:
        if left <= 0:
            return f"{self.gateway}/files/{token}?direct=1&Signature=SECRETSIGNATURE"
        return f"{self.cdn}/r/{left}/{token}?Signature=SECRETSIGNATURE"

    def app(self) -> Starlette:
        async def hop(request: Request) -> Response:
            self.seen.append(dict(request.headers))
            left = int(request.path_params["left"]) - 1
            return RedirectResponse(self._next(left, request.path_params["token"]), status_code=307)

        return Starlette(routes=[Route("/r/{left}/{token}", hop)])


@pytest.fixture
def cdn() -> Iterator[_Cdn]:
    chain = _Cdn()
    with serve_app(chain.app()) as cdn_base:
        chain.cdn = cdn_base
        with serve_app(chain.wrap(create_app(small()))) as base:
            chain.gateway = base
            yield chain


def test_cdn_redirects_are_followed_three_hops_and_never_carry_the_key(tmp_path: Path, cdn: _Cdn) -> None:
    spec, out = write_spec(tmp_path, cdn.gateway, seeds=1)
    result = run(spec)
    assert result.exit_code == 0 and sum(r["status"] == "ok" for r in rows(out)) == 2
    assert len(cdn.seen) == 2 * 2  # two hops on the CDN for each image
    assert not any("authorization" in headers for headers in cdn.seen)
    assert mock_stats(cdn.gateway)["download_auth_headers"] == 0


def test_a_fourth_redirect_is_refused_with_a_clear_message(tmp_path: Path, cdn: _Cdn) -> None:
    cdn.hops = 4
    spec, out = write_spec(tmp_path, cdn.gateway, seeds=1)
    result = run(spec)
    assert result.summary.errors_by_kind == {"too_many_redirects": 2}
    failed = rows(out)
    assert all("redirected more than 3 times" in r["error_message"] for r in failed)
    text = json.dumps(failed, default=str) + " ".join(result.notes)
    assert "SECRETSIGNATURE" not in text and "Signature" not in text  # host and path only
    assert not any("authorization" in headers for headers in cdn.seen)


# ----------------------------------------------------------------------------------- async tasks

ASYNC: dict[str, Any] = {"dialect": "parameters", "provider": "async: true, poll_interval: 0.2"}


def _killed_with_tasks_journaled(spec: Path, out: Path, base: str, tasks: int) -> None:
    """Start a run, SIGKILL it once ``tasks`` task ids are journaled (their tasks still running)."""
    proc = subprocess.Popen([sys.executable, "-m", "wanbatch", "run", str(spec), "--no-progress"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=cli_env(**{KEY_ENV: KEY}))
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if (out / "journal").is_dir() and len(journaled(out)[0]) >= tasks:
                break
            time.sleep(0.02)
        else:
            raise AssertionError("the tasks were never journaled")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert mock_stats(base)["requests"][POSTS] == tasks


@contextmanager
def tasks_left_running(tmp_path: Path) -> Iterator[tuple[str, Path, Path]]:
    """A gateway whose async tasks take 2 s, and a run of an async spec against it SIGKILLed once its 4
    task ids are journaled: yields (the gateway's base URL, the spec, its output) with the tasks running."""
    with run_in_thread(small(task_duration=2.0, dialect="parameters")) as base:
        spec, out = write_spec(tmp_path, base, **ASYNC)
        _killed_with_tasks_journaled(spec, out, base, 4)
        yield base, spec, out


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_renamed_provider_on_a_respelled_host_polls_the_tasks_it_paid_for(tmp_path: Path) -> None:
    with tasks_left_running(tmp_path) as (base, _, out):
        assert {ref.gateway for ref in journaled(out)[0].values()} == {gateway_of(base + "/v1")}
        renamed, _ = write_spec(tmp_path, base.replace("127.0.0.1", "localhost"), name="renamed.yaml",
                                dialect="parameters",
                                provider="async: true, poll_interval: 0.2, name: the-new-name")
        result = run(renamed)
        stats = mock_stats(base)
    assert result.exit_code == 0 and result.stats.resumed_tasks == 4
    assert stats["requests"][POSTS] == 4 and stats["billed"] == 4  # polled, never submitted again
    assert sum(r["status"] == "ok" for r in rows(out)) == 4


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_run_on_another_gateway_leaves_the_tasks_and_says_so(tmp_path: Path) -> None:
    with tasks_left_running(tmp_path) as (base, _, out), run_in_thread(small(dialect="parameters")) as other:
        moved, _ = write_spec(tmp_path, other, name="moved.yaml", **ASYNC)
        result = run(moved)
        assert result.exit_code == 1 and result.stats.foreign_tasks == 4
        assert mock_stats(other)["requests"].get(POSTS, 0) == 0  # not paid again
        message = next(n for n in result.notes if "not resubmitting" in n)
        assert f"4 to {gateway_of(base + '/v1')}" in message and gateway_of(other + "/v1") in message
        assert "--abandon-tasks" in message
        assert len(journaled(out)[0]) == 4  # still there for a run on the first gateway
        # --abandon-tasks forgets them (they were paid) and submits again, to this gateway.
        forced = run(moved, abandon_tasks=True)
        assert forced.exit_code == 0 and mock_stats(other)["requests"][POSTS] == 4
        assert any("--abandon-tasks" in n and "paid" in n for n in forced.notes)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_journal_from_before_gateways_is_polled_by_the_same_provider(tmp_path: Path) -> None:
    with tasks_left_running(tmp_path) as (base, spec, out):
        for path in (out / "journal").glob("*/tasks.jsonl"):  # as the previous release wrote them
            lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            path.write_text("".join(json.dumps({k: v for k, v in line.items() if k != "gateway"}) + "\n"
                                    for line in lines))
        assert {ref.gateway for ref in journaled(out)[0].values()} == {""}
        result = run(spec)
        stats = mock_stats(base)
    assert result.exit_code == 0 and result.summary.resumed_tasks == 4
    assert stats["requests"][POSTS] == 4 and stats["billed"] == 4


@pytest.mark.slow
def test_recovered_in_doubt_rows_name_the_provider(tmp_path: Path) -> None:
    with run_in_thread(small(latency=3.0)) as base:
        spec, out = write_spec(tmp_path, base, provider="name: my-gateway")
        proc = subprocess.Popen([sys.executable, "-m", "wanbatch", "run", str(spec), "--no-progress"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env=cli_env(**{KEY_ENV: KEY}))
        posts_reached(base, 4, 30)  # (30 s at most: the signal below is sent either way)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    with DatasetWriter.open(out, create=False) as ds:
        assert ds.recover().images_in_doubt == 4
    doubt = [r for r in rows(out) if r["error_kind"] == "in_doubt"]
    assert len(doubt) == 4 and {r["provider"] for r in doubt} == {"my-gateway"}
    assert KEY not in json.dumps(doubt, default=str)
