"""The mock's "flat" handler: exactly ``{model, prompt, size?, n?, watermark?, seed?}``, sync only.

A string ``response_format`` is refused the way new-api refuses it (docs/protocol.md); malformed bodies
answer ``config.new_api_status`` (500 on stock new-api, 400 on some forks).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from wanbatch.mock import answers
from wanbatch.mock.app import MockGateway
from wanbatch.mock.config import MockConfig
from wanbatch.mock.dialects import (
    BadRequest,
    GenRequest,
    check_bool,
    check_model,
    check_prompt,
    check_seed,
    check_size,
    int_in,
    no_unknown,
)
from wanbatch.mock.registry import MockDialect, MockRoute, register_mock_dialect
from wanbatch.models import MAX_N

FLAT_KEYS = frozenset({"model", "prompt", "size", "n", "watermark", "seed"})
RESPONSE_FORMAT_MESSAGE = (
    "invalid request body: json: cannot unmarshal string into Go struct field "
    "GeneralOpenAIRequest.response_format of type dto.ResponseFormat"
)


class OpenAIImages(MockDialect):
    """What the OpenAI-shaped dialects share: errors in ``{"error": {...}}``, images under ``data``."""

    family = "openai"
    base_path = "/v1"

    def refuse(self, exc: BadRequest, config: MockConfig, rid: str) -> Response:
        if exc.kind == "malformed":
            return answers.openai_error(self.malformed_status(config), exc.message, type_="new_api_error",
                                        code="invalid_request", request_id=rid)
        return answers.openai_error(400, exc.message, type_=self.invalid_type, code="InvalidParameter",
                                    request_id=rid)

    invalid_type = "invalid_request_error"

    def malformed_status(self, config: MockConfig) -> int:
        return 400

    async def answer(self, gw: MockGateway, request: Request, req: GenRequest, count: int, expires: int,
                     rid: str) -> Response:
        items = await gw.items(request, req, count, expires)
        return JSONResponse(answers.openai_images(items, gw.now()), headers={"x-request-id": rid})


class Flat(OpenAIImages):
    name = "flat"
    routes = (MockRoute("POST", "/v1/images/generations", "generate"),)
    invalid_type = "ali_error"

    def malformed_status(self, config: MockConfig) -> int:
        return config.new_api_status

    def parse(self, body: dict[str, Any]) -> GenRequest:
        if "response_format" in body and isinstance(body["response_format"], str):
            raise BadRequest("malformed", RESPONSE_FORMAT_MESSAGE)
        no_unknown(body, FLAT_KEYS, "")
        model = check_model(body.get("model"))
        prompt = check_prompt(body.get("prompt"))
        size = body.get("size", "2K")
        norm, width, height = check_size(model, size, allow_x=True, allow_star=True, allow_tiers=True)
        n = int_in(body.get("n", 1), "n", 1, MAX_N)
        check_bool(body, "watermark")
        seed = check_seed(body.get("seed"))
        params = {"watermark": body["watermark"]} if "watermark" in body else {}
        return GenRequest("flat", model, prompt, norm, width, height, n, seed, params=params)


HANDLER = Flat()


def register() -> None:
    register_mock_dialect(HANDLER)
