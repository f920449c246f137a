"""The "newapi" dialect: stock new-api's image endpoint, every parameter inside ``parameters``.

Stock new-api (``relay/channel/ali/image.go``, ``dto/openai_image.go``) has no ``seed`` in its image
request, so the flat body's seed is dropped; and when a body carries ``parameters``, the upstream
DashScope parameters are that object alone. So this dialect sends ``{model, prompt, parameters:
{size, n, seed, watermark, thinking_mode, color_palette}}``: size in DashScope's form (a tier or
``W*H``), every parameter where the upstream call is built from. Synchronous: new-api waits for
DashScope's task itself and answers in the OpenAI Images shape.
"""

from __future__ import annotations

from typing import Any

from wanbatch.providers.base import Answer, Call, Provider, openai_images
from wanbatch.providers.dashscope import dashscope_input, palette_list_only
from wanbatch.registry import Dialect, register_dialect
from wanbatch.types import Generation, Job

#: The spec params new-api's ``AliImageParameters`` carries upstream.
PARAM_KEYS = ("watermark", "thinking_mode", "color_palette", "enable_sequential", "bbox_list")


class NewApiProvider(Provider):
    dialect = "newapi"
    supports_async = False

    def generate_call(self, job: Job) -> Call:
        return Call("POST", self.url("images/generations"), json=newapi_body(job))

    def parse_generation(self, answer: Answer) -> Generation:
        return Generation(images=openai_images(answer.body), request_id=answer.request_id)


def newapi_body(job: Job) -> dict[str, Any]:
    parameters: dict[str, Any] = {"size": job.size, "n": job.n, "seed": job.seed}
    parameters.update({k: job.wire_params[k] for k in PARAM_KEYS if k in job.wire_params})
    body = {"model": job.model, "prompt": job.prompt, "parameters": parameters}
    if job.inputs:
        # stock new-api relays a JSON body's ``input`` as DashScope's ``input`` unchanged
        # (relay/channel/ali/image.go, oaiImage2AliImageRequest: Extra["input"]); its
        # /v1/images/edits route is multipart and sends only n and watermark upstream, so the
        # editing form is this one (docs/protocol.md, "Editing through new-api")
        body["input"] = dashscope_input(job)
    return body


DIALECT = Dialect("newapi", NewApiProvider, params=frozenset(PARAM_KEYS), value_rule=palette_list_only,
                  edits=True,
                  summary="stock new-api: OpenAI Images endpoint, size/n/seed/params inside parameters; sync")


def register() -> None:
    register_dialect(DIALECT)
