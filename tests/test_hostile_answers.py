"""Any gateway answer becomes a classified failure, never a traceback nor a crash loop.

A hostile DashScope-dialect gateway on 127.0.0.1 (plain ASGI, started here) answers each prompt in
one broken shape; ``wanbatch run`` runs in a subprocess, and a rerun must not crash either.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import pyarrow.parquet as pq
import pytest

import wanbatch
from tests.helpers import cli_env
from tests.helpers.servers import read_body, serve_app
from wanbatch import load_spec
from wanbatch.dataset import DatasetWriter
from wanbatch.plan import plan
from wanbatch.providers.base import Answer, Call, Provider
from wanbatch.registry import Dialect, register_dialect, unregister_dialect
from wanbatch.runner import RunOptions
from wanbatch.types import Generation, Job

pytestmark = pytest.mark.timeout(60)

KEY_ENV = "WANBATCH_HOSTILE_ANSWER_KEY"
Message = MutableMapping[str, Any]
Send = Callable[[Message], Awaitable[None]]

NESTED = b'{"output": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
#: 8 MiB of JSON whitespace and more, gzip-encoded into a few KB: a decoded-size bomb.
BOMB = gzip.compress(b'{"output": {"choices": []}, "pad": "' + b" " * (24 << 20) + b'"}', 9)


def answer_for(shape: str) -> tuple[int, dict[str, str], bytes]:
    js = {"content-type": "application/json"}
    if shape == "nested":
        return 200, js, NESTED
    if shape == "choices5":
        return 200, js, json.dumps({"output": {"choices": 5}}).encode()
    if shape == "resultstrue":
        return 200, js, json.dumps({"output": {"results": True}}).encode()
    if shape == "notutf8":
        return 200, js, b'{"output": "\xff\xfe\xfa"}'
    if shape == "gzipbomb":
        return 200, {**js, "content-encoding": "gzip"}, BOMB
    if shape == "hugeid":  # async submission: a 1 MB task id
        huge = {"output": {"task_id": "t" * (1 << 20), "task_status": "PENDING"}}
        return 200, js, json.dumps(huge).encode()
    if shape in ("pollcrash", "journaled"):  # async submission fine, the poll answer can never parse
        return 200, js, json.dumps({"output": {"task_id": "task-ok-1", "task_status": "PENDING"}}).encode()
    raise AssertionError(shape)


class Hostile:
    def __init__(self) -> None:
        self.polls = 0

    async def __call__(self, scope: Message, receive: Callable[[], Awaitable[Message]], send: Send) -> None:
        if scope["type"] != "http":
            return
        body = await read_body(receive)
        if scope["method"] == "GET":  # a poll
            self.polls += 1
            status, headers, content = 200, {"content-type": "application/json"}, json.dumps(
                {"output": {"task_status": "SUCCEEDED", "choices": 5, "results": True}}).encode()
        else:
            prompt = json.loads(body)["input"]["messages"][0]["content"][0]["text"]
            status, headers, content = answer_for(prompt)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(k.encode(), v.encode()) for k, v in headers.items()]})
        await send({"type": "http.response.body", "body": content})


@contextmanager
def hostile_gateway() -> Iterator[tuple[Hostile, str]]:
    app = Hostile()
    with serve_app(app) as base:
        yield app, base


def write_spec(tmp_path: Path, base: str, shapes: list[str], *, use_async: bool) -> Path:
    spec = tmp_path / "spec.yaml"
    extra = ", async: true, poll_interval: 0.05" if use_async else ""
    spec.write_text(f"""
name: hostile
provider: {{base_url: '{base}', api_key_env: {KEY_ENV}, dialect: dashscope{extra}}}
prompt: "{{p}}"
vars: {{p: [{", ".join(shapes)}]}}
sizes: [1K]
limits: {{concurrency: 2, retries: 0, request_timeout: 20}}
output: {tmp_path / "ds"}
""")
    return spec


def cli(spec: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "wanbatch", "run", str(spec), "--no-progress", *args],
                          capture_output=True, text=True, timeout=60,
                          env=cli_env(**{KEY_ENV: "sk-hostile-1"}))


def kinds(root: Path) -> dict[str, str]:
    rows = pq.read_table(root / "index").to_pylist()
    return {r["prompt"]: r["error_kind"] for r in rows}


def assert_clean(done: subprocess.CompletedProcess[str], code: int) -> None:
    assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stderr and "internal error" not in done.stderr, done.stderr


def test_broken_sync_answers_are_in_doubt_and_a_rerun_does_not_crash(tmp_path: Path) -> None:
    shapes = ["nested", "choices5", "resultstrue", "notutf8", "gzipbomb"]
    with hostile_gateway() as (_, base):
        spec = write_spec(tmp_path, base, shapes, use_async=False)
        started = time.monotonic()
        first = cli(spec)
        took = time.monotonic() - started
        again = cli(spec, "--retry-failed")
    assert_clean(first, 1)
    assert_clean(again, 1)
    # a 2xx that cannot be read was made and billed all the same: ambiguous (in doubt), not retried,
    # not even with --retry-failed; one over the size cap (not read at all) too: it was once
    # bad_response, which --retry-failed requested, and paid, again
    expected = dict.fromkeys(shapes, "unreadable_answer")
    assert kinds(tmp_path / "ds") == expected
    assert took < 30
    runs = [json.loads(p.read_text()) for p in (tmp_path / "ds" / "runs").glob("*.json")]
    assert sorted(r["exit_code"] for r in runs) == [1, 1]


def test_task_ids_that_cannot_be_polled_settle_the_task(tmp_path: Path) -> None:
    shapes = ["hugeid", "pollcrash", "journaled"]
    with hostile_gateway() as (app, base):
        spec = write_spec(tmp_path, base, shapes, use_async=True)
        # a task journaled with an id no URL can hold (an older release, or an edited journal)
        loaded = load_spec(spec)
        job = next(j for j in plan(loaded).jobs() if j.prompt == "journaled")
        with DatasetWriter.open(tmp_path / "ds") as ds:
            ds.journal_task(job.job_id, loaded.provider.name, "bad id\r\n" + "x" * 300)
        first = cli(spec)
        polls = app.polls
        settled = kinds(tmp_path / "ds")
        again = cli(spec)  # bad_response is requested again on a rerun: submitted anew, never the bad id
    assert_clean(first, 1)
    expected = {"hugeid": "unreadable_answer", "pollcrash": "bad_response", "journaled": "bad_response"}
    assert settled == expected  # a submission without a usable task id was billed: in doubt
    assert polls == 1  # only the well-formed id was polled; the journaled one was settled unpolled
    assert_clean(again, 1)
    assert app.polls == polls + 2 and kinds(tmp_path / "ds") == expected


class CrashyProvider(Provider):
    """A plugin dialect with a bug: building the request raises (and says the key, as bugs do)."""

    dialect = "crashy"

    def generate_call(self, job: Job) -> Call:
        raise RuntimeError("boom: sk-crashy-key-0123456789")

    def parse_generation(self, answer: Answer) -> Generation:  # pragma: no cover - never reached
        raise AssertionError


def test_a_crashed_run_is_recorded_as_aborted_not_done(tmp_path: Path) -> None:
    register_dialect(Dialect("crashy", CrashyProvider, params=frozenset()))
    try:
        spec = tmp_path / "spec.yaml"
        provider = f"{{base_url: 'http://127.0.0.1:9/v1', api_key_env: {KEY_ENV}, dialect: crashy}}"
        spec.write_text(f"name: crash\nprovider: {provider}\nprompt: a cat\nsizes: [1K]\n"
                        f"output: {tmp_path / 'ds'}\n")
        with pytest.raises(BaseException) as info:  # a bug propagates to the caller ...
            wanbatch.run(load_spec(spec), RunOptions(env={KEY_ENV: "sk-crashy-key-0123456789"}))
        leaf = info.value
        while isinstance(leaf, BaseExceptionGroup):
            leaf = leaf.exceptions[0]
        assert isinstance(leaf, RuntimeError)
    finally:
        unregister_dialect("crashy")
    # ... and the run is on record as what it was
    (summary,) = [json.loads(p.read_text()) for p in (tmp_path / "ds" / "runs").glob("*.json")]
    assert summary["exit_code"] == 3 and summary["error"].startswith("crashed: RuntimeError: boom")
    assert "sk-crashy" not in summary["error"] and "0123456789" not in summary["error"]
    manifest = json.loads((tmp_path / "ds" / "wanbatch.json").read_text())
    assert manifest["runs"][-1]["status"] == "aborted"


# ------------------------------------------------------------------ a newcomer's pass, key in the env
# One flat-dialect gateway on 127.0.0.1; the prompt picks how it misbehaves. Each case runs
# `wanbatch run` with a real-looking key and reads everything printed or written, as a user would.

NEWCOMER_KEY = "sk-live-4f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c3e1f"
FLAT_ENV = "WANBATCH_NEWCOMER_KEY"


async def newcomer_gateway(scope: Message, receive: Callable[[], Awaitable[Message]], send: Send) -> None:
    if scope["type"] != "http":
        return
    body = await read_body(receive)
    host = dict(scope["headers"])[b"host"].decode()

    async def answer(status: int, content: bytes, ctype: str = "application/json",
                     extra: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", ctype.encode()), *extra]})
        await send({"type": "http.response.body", "body": content})

    async def stream(pieces: Iterator[bytes], pause: float = 0.0) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        for piece in pieces:
            await send({"type": "http.response.body", "body": piece, "more_body": True})
            await anyio.sleep(pause)
        await send({"type": "http.response.body", "body": b"{}"})

    if scope["path"].startswith("/loop"):
        return await answer(302, b"", extra=((b"location", scope["path"].encode()),))
    case = json.loads(body)["prompt"].split()[0]
    auth = dict(scope["headers"]).get(b"authorization", b"").decode()
    if case == "html":
        page = b"<html><title>Welcome to nginx!</title>" + b"x" * 3000 + b"</html>"
        return await answer(200, page, "text/html")
    if case == "big":  # 50 MB of JSON whitespace
        return await stream(iter([b" " * (1 << 20)] * 50))
    if case == "drip":  # 1 byte a second
        return await stream(iter([b" "] * 600), pause=1.0)
    if case == "echo":
        said = f"bad request: you sent Authorization: {auth}; key {auth[7:]} is not allowed here"
        return await answer(400, json.dumps({"error": {"message": said}}).encode())
    if case == "deep":
        return await answer(200, b'{"data": ' + b"[" * 10_000 + b"]" * 10_000 + b"}")
    if case == "loop":
        return await answer(302, b"", extra=((b"location", b"/v1/images/generations"),))
    if case == "imageloop":
        return await answer(200, json.dumps({"data": [{"url": f"http://{host}/loop/a.png"}]}).encode())
    if case == "file":
        return await answer(200, json.dumps({"data": [{"url": "file:///etc/passwd"}]}).encode())
    raise AssertionError(case)


def key_pieces(text: str) -> list[str]:
    """Every 6-character piece of the key that ``text`` holds (the masking promise of redact.py)."""
    return [NEWCOMER_KEY[i:i + 6] for i in range(len(NEWCOMER_KEY) - 5) if NEWCOMER_KEY[i:i + 6] in text]


# case → (exit code, where the problem is named: "row" (index error_message) or "stderr", words it says)
NEWCOMER_CASES = {
    "html": (1, "row", ["HTML page", "is base_url the API's address", "may have been made and billed"]),
    "big": (1, "row", ["answer over 8 MiB", "may have been made and billed"]),
    "drip": (1, "row", ["no complete answer within 2 s", "may have been made and billed"]),
    "echo": (1, "row", ["400 from", "bad request"]),
    "deep": (1, "row", ["nested more than 64 levels deep", "may have been made and billed"]),
    "loop": (3, "stderr", ["302 from", "redirected to /v1/images/generations", "set base_url"]),
    "imageloop": (1, "row", ["redirected more than 3 times", "not followed further"]),
    "file": (1, "row", ["not http(s) (file)", "not fetched"]),
}


@pytest.mark.parametrize("case", list(NEWCOMER_CASES))
def test_what_a_newcomer_reads_from_a_hostile_gateway(case: str, tmp_path: Path) -> None:
    code, where, words = NEWCOMER_CASES[case]
    with serve_app(newcomer_gateway) as base:
        spec = tmp_path / "spec.yaml"
        spec.write_text(f"""
name: newcomer
provider: {{base_url: '{base}/v1', api_key_env: {FLAT_ENV}, dialect: flat}}
prompt: "{case} {{x}}"
vars: {{x: [one]}}
sizes: [1K]
limits: {{concurrency: 1, retries: 1, request_timeout: 2s, download_timeout: 5s}}
output: {tmp_path / "ds"}
""")
        done = subprocess.run([sys.executable, "-m", "wanbatch", "run", str(spec), "--no-progress"],
                              capture_output=True, text=True, timeout=60,
                              env=cli_env(**{FLAT_ENV: NEWCOMER_KEY}), cwd=tmp_path)
    assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    written = [p.read_bytes().decode("utf-8", "replace") for p in (tmp_path / "ds").rglob("*") if p.is_file()]
    index = tmp_path / "ds" / "index"
    rows = pq.read_table(index).to_pylist() if index.exists() else []
    everything = [done.stdout, done.stderr, *written, json.dumps(rows, default=str)]
    assert [key_pieces(text) for text in everything if key_pieces(text)] == []
    said = done.stderr if where == "stderr" else rows[0]["error_message"]
    assert all(word in said for word in words), said
    if where == "row":  # the run's last lines say why, not only how many
        assert f"{rows[0]['error_kind']} (1): {said}" in done.stderr
    assert len(said) <= 300 or where == "stderr"
