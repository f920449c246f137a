"""The mock's "newapi" handler: stock new-api in front of DashScope (docs/protocol.md, "Stock new-api").

What stock new-api does with an image request (``relay/channel/ali/image.go``, ``dto/openai_image.go``):
- ``seed`` is not a field of its image request: a top-level seed is dropped (the upstream then picks
  a seed of its own, so the same request twice gives different images);
- when the body holds a ``parameters`` object, the upstream parameters are that object alone
  (``size``, ``n``, ``seed``, ``watermark``, ``thinking_mode``, ``color_palette``,
  ``enable_sequential``; other keys are lost) and the top-level ``size`` and ``n`` are ignored;
  without one, ``size`` (``x`` → ``*``), ``n`` and ``watermark`` are taken from the top level;
- unknown top-level fields are kept aside (``Extra``), not refused; ``/_mock/requests`` shows them —
  except ``input``, which new-api sends upstream as DashScope's ``input`` unchanged
  (``oaiImage2AliImageRequest``): ``{messages: [{role: user, content: [{image}, …, {text}]}]}`` is
  how an editing request travels (the upstream prompt is then the text item).
"""

from __future__ import annotations

from typing import Any

from wanbatch.mock.dialects import (
    BadRequest,
    GenRequest,
    check_bool,
    check_edit,
    check_model,
    check_palette,
    check_prompt,
    check_seed,
    check_size,
    int_in,
    parse_content,
)
from wanbatch.mock.flat import OpenAIImages
from wanbatch.mock.registry import MockRoute, register_mock_dialect
from wanbatch.models import max_n

#: Top-level fields of new-api's ``dto.ImageRequest`` that matter here; any other is kept aside.
KNOWN = frozenset({"model", "prompt", "size", "n", "watermark", "response_format", "quality", "style",
                   "user"})
#: ``AliImageParameters`` fields the upstream call can carry (others are lost when Go decodes them).
UPSTREAM_PARAMS = ("size", "n", "seed", "watermark", "thinking_mode", "color_palette", "enable_sequential",
                   "bbox_list")


class NewApi(OpenAIImages):
    name = "newapi"
    routes = (MockRoute("POST", "/v1/images/generations", "generate"),)
    invalid_type = "ali_error"

    def malformed_status(self, config: Any) -> int:
        return int(config.new_api_status)

    def parse(self, body: dict[str, Any]) -> GenRequest:
        model = check_model(body.get("model"))
        inputs: tuple[str, ...] = ()
        if "input" in body:
            prompt, inputs = _input(body["input"])
        else:
            prompt = check_prompt(body.get("prompt"))
        response_format = body.get("response_format", "url")
        if response_format not in ("url", "b64_json", "", None):
            raise BadRequest("invalid",
                             f"response_format must be 'url' or 'b64_json', not {response_format!r}")
        if "parameters" in body:
            inner = body["parameters"]
            if not isinstance(inner, dict):
                raise BadRequest("malformed", "invalid parameters field: json: cannot unmarshal into "
                                 "Go value of type ali.AliImageParameters")
            upstream = {k: inner[k] for k in UPSTREAM_PARAMS if k in inner}
        else:  # top-level fields; no seed: dto.ImageRequest has none
            upstream = {k: body[k] for k in ("size", "n", "watermark") if k in body}
            if isinstance(upstream.get("size"), str):
                upstream["size"] = upstream["size"].replace("x", "*")
        for key in ("enable_sequential", "thinking_mode", "watermark"):
            check_bool(upstream, key, "parameters.", invalid=True)
        check_palette(upstream.get("color_palette"), allow_theme=False)
        norm, width, height = check_size(model, upstream.get("size", "2K"), allow_x=False, allow_star=True,
                                         allow_tiers=True)
        n = int_in(upstream.get("n", 1), "n", 1, max_n(upstream.get("enable_sequential") is True))
        seed = check_seed(upstream.get("seed"))
        params = {k: v for k, v in upstream.items() if k not in ("seed", "size", "n") and v is not None}
        check_edit(inputs, norm, params)
        return GenRequest("newapi", model, prompt, norm, width, height, n, seed,
                          "b64_json" if response_format == "b64_json" else "url", params=params,
                          inputs=inputs)

    @staticmethod
    def kept_aside(body: dict[str, Any]) -> list[str]:
        """Top-level fields new-api keeps aside (``Extra``) and never sends upstream."""
        return sorted(k for k in body if k not in KNOWN and k not in ("parameters", "input"))


def _input(value: Any) -> tuple[str, tuple[str, ...]]:
    messages = value.get("messages") if isinstance(value, dict) else None
    if not isinstance(messages, list) or len(messages) != 1 or not isinstance(messages[0], dict):
        raise BadRequest("malformed", "invalid input field: json: cannot unmarshal into Go value of type "
                         "ali.AliImageInput")
    return parse_content(messages[0].get("content"))


HANDLER = NewApi()


def register() -> None:
    register_mock_dialect(HANDLER)
