"""A fourth dialect, added from this one module: its client, its spec rules and its mock handler.

Proves the registry is the only door: nothing in ``wanbatch/`` knows the name "toy", yet a spec that
asks for it is validated by its rules and runs end to end — in-process (provider kind ``mock``) and
against the mock over a loopback socket (provider kind ``gateway``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

import wanbatch
from wanbatch.errors import SpecErrors
from wanbatch.mock import MockConfig, answers, run_in_thread
from wanbatch.mock.app import MockGateway
from wanbatch.mock.dialects import BadRequest, GenRequest, check_model, check_prompt, check_seed, int_in
from wanbatch.mock.registry import (
    MockDialect,
    MockRoute,
    mock_dialect_names,
    register_mock_dialect,
    unregister_mock_dialect,
)
from wanbatch.models import pixels
from wanbatch.providers.base import Answer, Call, Provider
from wanbatch.registry import Dialect, Problem, dialect_names, register_dialect, unregister_dialect
from wanbatch.types import DeliveredImage, Generation, Job

# ------------------------------------------------------------------ the client side of "toy"


class ToyProvider(Provider):
    """``POST {base_url}/generate`` with ``{what, model, dims: [w, h], count, seed}``; answers
    ``{"pictures": [{"href": URL}]}``."""

    dialect = "toy"
    supports_async = False

    def generate_call(self, job: Job) -> Call:
        width, height = pixels(job.size)
        body = {"what": job.prompt, "model": job.model, "dims": [width, height], "count": job.n,
                "seed": job.seed}
        return Call("POST", self.url("generate"), json=body)

    def parse_generation(self, answer: Answer) -> Generation:
        pictures = answer.body.get("pictures") or []
        return Generation(images=[DeliveredImage(index=k, url=p["href"]) for k, p in enumerate(pictures)],
                          request_id=answer.request_id)


def square_only(size: str, model: str) -> Problem | None:
    width, height = pixels(size)
    return None if width == height else (f"{size} is not square; the toy dialect draws squares only",
                                         "use a tier or W*W")


DIALECT = Dialect("toy", ToyProvider, params=frozenset({"watermark"}), size_rule=square_only)

# ------------------------------------------------------------------ the mock side of "toy"


class ToyHandler(MockDialect):
    name = "toy"
    family = "openai"
    base_path = "/toy"
    routes = (MockRoute("POST", "/toy/generate", "generate"),)

    def parse(self, body: dict[str, Any]) -> GenRequest:
        if set(body) != {"what", "model", "dims", "count", "seed"}:
            raise BadRequest("malformed", f"toy wants what, model, dims, count, seed; got {sorted(body)}")
        dims = body["dims"]
        square = isinstance(dims, list) and len(dims) == 2 and dims[0] == dims[1]
        if not (square and isinstance(dims[0], int)):
            raise BadRequest("invalid", f"dims must be [side, side], not {dims!r}")
        side = dims[0]
        return GenRequest("toy", check_model(body["model"]), check_prompt(body["what"]), f"{side}*{side}",
                          side, side, int_in(body["count"], "count", 1, 4), check_seed(body["seed"]))

    def refuse(self, exc: BadRequest, config: MockConfig, rid: str) -> Response:
        return answers.openai_error(400, exc.message, type_="toy_error", code=exc.kind, request_id=rid)

    async def answer(self, gw: MockGateway, request: Request, req: GenRequest, count: int, expires: int,
                     rid: str) -> Response:
        pictures = [{"href": gw.url(request, req, k, expires)} for k in range(count)]
        return JSONResponse({"pictures": pictures}, headers={"x-request-id": rid})


HANDLER = ToyHandler()


def register() -> None:
    """What a plugin's ``register()`` would do: the same calls the built-ins make."""
    register_dialect(DIALECT)
    register_mock_dialect(HANDLER)


# ------------------------------------------------------------------ tests


@pytest.fixture
def toy() -> Iterator[None]:
    register()
    try:
        yield
    finally:
        unregister_dialect("toy")
        unregister_mock_dialect("toy")


def spec_text(out: Path, provider: str, sizes: str = "[1K, 1024*1024]", params: str = "{}") -> str:
    return (f"name: toyrun\nprovider: {provider}\nprompt: 'a {{thing}}'\nvars: {{thing: [cat, owl]}}\n"
            f"seeds: [1, 2]\nsizes: {sizes}\nparams: {params}\nn: 2\noutput: {out}\n")


def rows(root: Path) -> list[dict[str, Any]]:
    return pq.read_table(root / "index").to_pylist()


def test_the_toy_dialect_runs_end_to_end_through_the_in_process_mock(toy: None, tmp_path: Path) -> None:
    assert "toy" in dialect_names() and "toy" in mock_dialect_names()
    out = tmp_path / "ds"
    spec = wanbatch.load_spec(tmp_path / "s.yaml", text=spec_text(
        out, "{type: mock, dialect: toy, scale: 0.0625, latency: 0}", sizes="[1K]",
        params="{watermark: true}"))
    result = wanbatch.run(spec)
    assert result.exit_code == 0, result.summary
    found = rows(out)
    assert len(found) == 2 * 2 * 2 and {r["status"] for r in found} == {"ok"}
    assert {(r["width"], r["height"]) for r in found} == {(64, 64)}  # 1024 * 0.0625: the toy body's dims
    assert {r["provider"] for r in found} == {"mock"}
    assert all((out / r["path"]).is_file() for r in found)


def test_the_toy_dialect_runs_against_the_mock_over_a_socket(toy: None, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOY_KEY", "sk-toy-123456")
    out = tmp_path / "ds"
    with run_in_thread(MockConfig(dialect="toy", scale=1 / 64)) as base:
        provider = f"{{base_url: '{base}/toy', dialect: toy, api_key_env: TOY_KEY, name: toygw}}"
        spec = wanbatch.load_spec(tmp_path / "s.yaml", text=spec_text(out, provider, sizes="[1K]"))
        result = wanbatch.run(spec)
        assert result.exit_code == 0, result.summary
        stats = httpx.get(f"{base}/_mock/stats").json()
    found = rows(out)
    assert len(found) == 8 and {r["status"] for r in found} == {"ok"}
    assert {r["provider"] for r in found} == {"toygw"}
    bodies = [b["body"] for b in stats["bodies"] if b["route"] == "/toy/generate"]
    assert len(bodies) == 4 and all(set(b) == {"what", "model", "dims", "count", "seed"} for b in bodies)
    assert {json.dumps(b["dims"]) for b in bodies} == {"[1024, 1024]"}


def test_the_spec_asks_the_toy_dialect_its_rules(toy: None, tmp_path: Path) -> None:
    provider = "{base_url: 'https://toy.example/v1', dialect: toy}"
    with pytest.raises(SpecErrors) as caught:
        wanbatch.load_spec(tmp_path / "s.yaml", text=spec_text(
            tmp_path, provider, sizes="[1K, 1920*1080]", params="{thinking_mode: false}"))
    text = str(caught.value)
    assert "1920*1080 is not square; the toy dialect draws squares only" in text
    assert "thinking_mode cannot be sent by the toy dialect (it accepts only watermark)" in text
    with pytest.raises(SpecErrors, match="synchronous only"):
        wanbatch.load_spec(tmp_path / "s.yaml", text=spec_text(
            tmp_path, "{base_url: 'https://toy.example/v1', dialect: toy, async: true}"))


def test_an_unregistered_dialect_is_a_spec_error_listing_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(SpecErrors) as caught:
        wanbatch.load_spec(tmp_path / "s.yaml", text=spec_text(
            tmp_path, "{base_url: 'https://toy.example/v1', dialect: toy}"))
    assert "unknown dialect 'toy'; allowed: flat, parameters, dashscope" in str(caught.value)


def test_the_in_process_mock_speaks_every_dialect_it_has_a_handler_for(tmp_path: Path) -> None:
    """DashScope has a mock handler, so ``provider: {type: mock, dialect: dashscope}`` runs (async too)."""
    out = tmp_path / "ds"
    spec = wanbatch.load_spec(tmp_path / "s.yaml", text=spec_text(
        out, "{type: mock, dialect: dashscope, async: true, scale: 0.0625, latency: 0}",
        sizes="[1K, 1280*720]", params="{thinking_mode: false}"))
    result = wanbatch.run(spec)
    assert result.exit_code == 0, result.summary
    found = rows(out)
    assert len(found) == 16 and {r["status"] for r in found} == {"ok"} and all(r["task_id"] for r in found)
    assert {(r["width"], r["height"]) for r in found} == {(64, 64), (80, 45)}
