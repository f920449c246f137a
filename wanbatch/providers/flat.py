"""The "flat" dialect (new-api style gateways): ``POST {base_url}/images/generations``, sync only.

The body is exactly ``{model, prompt, size, n, seed, watermark?}``. ``response_format`` is never sent:
these gateways decode it as an object and refuse the string (docs/protocol.md).
"""

from __future__ import annotations

from typing import Any

from wanbatch.errors import FatalError
from wanbatch.models import is_default
from wanbatch.providers.base import Answer, Call, Provider, openai_images
from wanbatch.registry import Dialect, register_dialect
from wanbatch.types import Generation, Job

#: The only request parameter the flat body can carry besides model, prompt, size, n and seed.
FLAT_PARAMS = frozenset({"watermark"})


class FlatProvider(Provider):
    dialect = "flat"
    supports_async = False

    def generate_call(self, job: Job) -> Call:
        return Call("POST", self.url("images/generations"), json=flat_body(job))

    def parse_generation(self, answer: Answer) -> Generation:
        return Generation(images=openai_images(answer.body), request_id=answer.request_id)


def flat_body(job: Job) -> dict[str, Any]:
    """The request body; a parameter the dialect cannot express stops the run rather than being dropped."""
    extra = sorted(k for k, v in job.params.items() if k not in FLAT_PARAMS and not is_default(k, v))
    if extra:
        raise FatalError(
            f"the flat dialect cannot send {', '.join(extra)}; use the parameters or dashscope dialect, "
            "or remove them from params", kind="unsupported",
        )
    body: dict[str, Any] = {"model": job.model, "prompt": job.prompt, "size": job.size, "n": job.n,
                            "seed": job.seed}
    if "watermark" in job.wire_params:
        body["watermark"] = job.wire_params["watermark"]
    return body


DIALECT = Dialect("flat", FlatProvider, params=FLAT_PARAMS,
                  summary="new-api style OpenAI Images endpoint; sync only; never sends response_format")


def register() -> None:
    register_dialect(DIALECT)
