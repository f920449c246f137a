"""No byte of the API key in any output: a hostile loopback gateway echoes it everywhere it can.

The gateway (plain ASGI on 127.0.0.1, started here) answers each prompt in one hostile shape — the
Authorization header padded into a 2000-character error (JSON and HTML), a 200 that holds an error,
the key as the request-id header, the key in ``revised_prompt`` — with the key placed at several
offsets around the 300-character cut. Then every file of the dataset (Parquet read back as text too),
``--json`` stdout, stdout and stderr of the CLI (a subprocess) are searched for the key and for every
6-character substring of it.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from PIL import Image

from tests.helpers import cli_env
from tests.helpers.servers import serve_app
from wanbatch.redact import MIN_FRAGMENT, redact, redact_short, register_secret

pytestmark = pytest.mark.timeout(60)

KEY_ENV = "WANBATCH_SECRET_TEST_KEY"
KEY = "sk-QmZrTwPxLkVnBgHyJdFsCeUaRiOtWq"  # letters only: no accidental match in hex digests or ids
OFFSETS = (240, 262, 270, 280, 285, 290, 295)  # where the key starts in a padded message

Message = MutableMapping[str, Any]


def fragments(key: str = KEY) -> list[str]:
    return [key[i:i + MIN_FRAGMENT] for i in range(len(key) - MIN_FRAGMENT + 1)]


def leaks(data: bytes | str) -> list[str]:
    text = data.decode("latin-1") if isinstance(data, bytes) else data
    return [f for f in fragments() if f in text]


def padded(offset: int, total: int = 2000) -> str:
    head = "x" * (offset - len("Authorization: Bearer "))
    text = f"{head}Authorization: Bearer {KEY}"
    return text + "y" * (total - len(text))


def png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(buf, "PNG")
    return buf.getvalue()


class Hostile:
    """Answers by the prompt's first word; ``fatal`` makes every answer a 401 that echoes the key."""

    def __init__(self) -> None:
        self.fatal = False
        self.base = ""

    async def __call__(self, scope: Message, receive: Callable[[], Awaitable[Message]],
                      send: Callable[[Message], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        if scope["path"].endswith("/img.png"):
            await self._answer(send, 200, {"content-type": "image/png"}, png())
            return
        prompt = json.loads(body)["prompt"]
        shape, _, offset_text = prompt.partition(" ")
        offset = int(offset_text.split()[0])
        headers = {"content-type": "application/json", "x-request-id": KEY}
        if self.fatal:
            error = {"error": {"message": padded(offset), "code": "invalid_api_key"}}
            await self._answer(send, 401, headers, json.dumps(error).encode())
        elif shape == "json":
            error = {"error": {"message": padded(offset), "type": "invalid_request_error", "code": "bad"}}
            await self._answer(send, 400, headers, json.dumps(error).encode())
        elif shape == "html":
            page = f"<html><head><title>{padded(offset)}</title></head><body>no</body></html>"
            await self._answer(send, 418, {**headers, "content-type": "text/html"}, page.encode())
        elif shape == "ok200":
            error = {"error": {"message": padded(offset), "code": "upstream"}}
            await self._answer(send, 200, headers, json.dumps(error).encode())
        else:  # revised: an image whose revised_prompt holds the key
            data = {"data": [{"url": f"{self.base}/img.png", "revised_prompt": padded(offset, 600)}]}
            await self._answer(send, 200, headers, json.dumps(data).encode())

    @staticmethod
    async def _answer(send: Callable[[Message], Awaitable[None]], status: int, headers: dict[str, str],
                      content: bytes) -> None:
        await send({"type": "http.response.start", "status": status,
                    "headers": [(k.encode(), v.encode()) for k, v in headers.items()]})
        await send({"type": "http.response.body", "body": content})


@contextmanager
def hostile_gateway() -> Iterator[Hostile]:
    app = Hostile()
    with serve_app(app) as base:
        app.base = base
        yield app


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "wanbatch", *args], capture_output=True, text=True,
                          timeout=60, env=cli_env(**{KEY_ENV: KEY}), cwd=cwd)


def dataset_text(root: Path) -> list[tuple[str, bytes]]:
    """Every file's bytes, and each Parquet file's rows as text (compression could hide a leak)."""
    found: list[tuple[str, bytes]] = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        found.append((str(path), path.read_bytes()))
        if path.suffix == ".parquet":
            found.append((f"{path} (rows)", str(pq.read_table(path).to_pylist()).encode()))
    return found


def test_redact_masks_before_cutting_at_every_offset() -> None:
    register_secret(KEY)
    for offset in range(200, 320):
        text = "e" * offset + KEY + "z" * 2000
        assert not leaks(redact_short(text)), offset
        assert not leaks(redact_short(text)[:-1])  # and whatever is cut from it later
    assert redact(f"a {KEY[:-1]} b") == "a *** b"  # 31 of 32 characters: still masked
    assert redact(f"x{KEY[5:11]}x") == "x***x"  # any 6 characters of it
    assert redact("ordinary words stay as they are") == "ordinary words stay as they are"


def test_hostile_gateway_leaks_no_part_of_the_key(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    with hostile_gateway() as gw:
        shapes = ", ".join(f"'{shape} {offset}'" for shape in ("json", "html", "ok200", "revised")
                           for offset in OFFSETS)
        spec = tmp_path / "spec.yaml"
        spec.write_text(f"""
name: secrets
provider: {{base_url: '{gw.base}/v1', api_key_env: {KEY_ENV}, dialect: flat}}
prompt: "{{p}}"
vars: {{p: [{shapes}]}}
sizes: [1K]
limits: {{concurrency: 4, retries: 0}}
output: {out}
""")
        first = cli("run", str(spec), "--json", "--no-progress", cwd=tmp_path)
        second = cli("run", str(spec), "--retry-failed", "--no-progress", cwd=tmp_path)
        gw.fatal = True
        third = cli("run", str(spec), "--retry-failed", "--no-progress", cwd=tmp_path)

    summary = json.loads(first.stdout)
    assert first.returncode == 1, first.stderr
    assert summary["failed_images"] == 3 * len(OFFSETS) and summary["done_images"] == len(OFFSETS)
    assert second.returncode == 1 and "failed" in second.stderr
    assert third.returncode == 3 and "API key was refused" in third.stderr, third.stderr
    for proc in (first, second, third):
        assert "Traceback" not in proc.stderr
        assert not leaks(proc.stdout), proc.stdout
        assert not leaks(proc.stderr), proc.stderr
    rows = [r for p in (out / "index").glob("*.parquet") for r in pq.read_table(p).to_pylist()]
    assert any("***" in (r["error_message"] or "") for r in rows)  # the echo was there, masked
    assert any("***" in (r["revised_prompt"] or "") for r in rows if r["status"] == "ok")
    files = dataset_text(out)
    assert any("runs" in name for name, _ in files)
    for name, data in files:
        assert not leaks(data), name


@pytest.mark.parametrize("url", [
    "https://user@gw.example/v1", "https://user:pw@gw.example/v1", "https://@gw.example/v1",
    "https://gw.example/v1?token=abc", "https://gw.example/v1#frag",
    f"https://gw.example/{KEY}/v1", "https://gw.example/v1?k=" + KEY.replace("Q", "%51"),
])
def test_base_url_with_credentials_or_the_key_is_a_spec_error(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from wanbatch import load_spec
    from wanbatch.errors import SpecError

    monkeypatch.setenv(KEY_ENV, KEY)
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"provider: {{base_url: '{url}', api_key_env: {KEY_ENV}}}\nprompt: a cat\n")
    with pytest.raises(SpecError) as info:
        load_spec(spec)
    text = info.value.render()
    assert "provider.base_url" in text and ("credentials" in text or "contains the API key" in text), text
    assert not leaks(text)


def test_key_expanded_into_base_url_is_refused(tmp_path: Path) -> None:
    """A ${VAR} in base_url that expands to the key: refused before anything is sent."""
    spec = tmp_path / "spec.yaml"
    url = f"http://127.0.0.1:9/${{{KEY_ENV}}}"
    spec.write_text(f"name: s\nprovider: {{base_url: '{url}', api_key_env: {KEY_ENV}}}\n"
                    f"prompt: a cat\noutput: {tmp_path / 'ds'}\n")
    done = cli("run", str(spec), "--no-progress", cwd=tmp_path)
    assert done.returncode == 2 and "contains the API key" in done.stderr, done.stderr
    assert not leaks(done.stderr + done.stdout) and "Traceback" not in done.stderr


@pytest.mark.parametrize(("key", "says"), [("sk-abc\r\nX-Evil: 1", "line break"),
                                           ("sk-clé-non-ascii", "non-ASCII")])
def test_a_key_that_cannot_be_a_header_is_a_clear_error(key: str, says: str, tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"name: s\nprovider: {{base_url: 'http://127.0.0.1:9/v1', api_key_env: {KEY_ENV}}}\n"
                    f"prompt: a cat\noutput: {tmp_path / 'ds'}\n")
    done = subprocess.run([sys.executable, "-m", "wanbatch", "run", str(spec), "--no-progress"],
                          capture_output=True, text=True, timeout=60, env=cli_env(**{KEY_ENV: key}),
                          cwd=tmp_path)
    assert done.returncode == 3, done.stderr
    assert says in done.stderr and f"${KEY_ENV}" in done.stderr and "Traceback" not in done.stderr
    assert key not in done.stderr and "sk-abc" not in done.stderr
