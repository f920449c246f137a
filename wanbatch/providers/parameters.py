"""The "parameters" dialect: OpenAI Images endpoint with a nested ``parameters`` object and async tasks.

Sizes must be ``WxH`` from the gateway's fixed list (tiers map to their square). With ``"async": true``
the gateway answers a task id and ``GET {base_url}/tasks/{id}`` answers the synchronous body once done.
"""

from __future__ import annotations

import uuid
from typing import Any

from wanbatch.errors import RefusedError, TransientError
from wanbatch.models import BASE, PARAM_KEYS as MODEL_PARAMS, PARAMETERS_SIZES, PRO, to_wxh
from wanbatch.providers.base import Answer, Call, Provider, has_images, noted, openai_images
from wanbatch.registry import Dialect, Problem, register_dialect
from wanbatch.types import Generation, Job, TaskState

#: The only sizes these gateways accept, per model (docs/protocol.md, "Models and sizes").
SIZES = PARAMETERS_SIZES
PARAM_KEYS = ("seed", *MODEL_PARAMS)
_RUNNING = {"queued", "pending", "processing", "running", "in_progress", "submitted"}
_SUCCEEDED = {"succeeded", "success", "completed", "done"}
_FAILED = {"failed", "failure", "error", "cancelled", "canceled", "expired"}
#: Prefix of the ids of answers that came back whole from an async submission (see ``parse_submit``).
INLINE_PREFIX = "inline-"


class ParametersProvider(Provider):
    dialect = "parameters"
    supports_async = True

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._inline: dict[str, Generation] = {}

    def body(self, job: Job, *, use_async: bool) -> dict[str, Any]:
        size = to_wxh(job.size)
        allowed = SIZES.get(job.model, SIZES[BASE])
        if size not in allowed:
            raise RefusedError(
                f"size {job.size} is not served by {job.model} over the parameters dialect; "
                f"use one of {', '.join(allowed)}", kind="invalid_parameter",
            )
        inner: dict[str, Any] = {"seed": job.seed}
        inner.update({k: job.wire_params[k] for k in PARAM_KEYS if k in job.wire_params and k != "seed"})
        body: dict[str, Any] = {"model": job.model, "prompt": job.prompt, "size": size, "n": job.n,
                                "response_format": self.response_format}
        if use_async:
            body["async"] = True
        body["parameters"] = inner
        return body

    def generate_call(self, job: Job) -> Call:
        return Call("POST", self.url("images/generations"), json=self.body(job, use_async=False))

    def parse_generation(self, answer: Answer) -> Generation:
        return Generation(images=openai_images(answer.body), request_id=answer.request_id)

    def submit_call(self, job: Job) -> Call:
        return Call("POST", self.url("images/generations"), json=self.body(job, use_async=True))

    def parse_submit(self, answer: Answer) -> str:
        body = answer.body
        task_id = body.get("id") or body.get("task_id")
        if isinstance(task_id, str) and task_id:
            return task_id
        if "data" in body:
            # The gateway ignored "async" and answered in full: keep the paid-for answer for the poll.
            key = f"{INLINE_PREFIX}{uuid.uuid4().hex}"
            self._inline[key] = self.parse_generation(answer)
            return key
        raise TransientError("the async submission was answered without a task id", kind="bad_response",
                             request_id=answer.request_id)

    def poll_call(self, task_id: str) -> Call:
        return Call("GET", self.url(f"tasks/{self.quote_id(task_id)}"))

    async def poll(self, task_id: str) -> TaskState:
        if task_id.startswith(INLINE_PREFIX):
            generation = self._inline.pop(task_id, None)
            if generation is None:
                raise RefusedError(f"task {task_id} was answered in an earlier process and is gone",
                                   kind="task_unknown")
            return TaskState(task_id, "succeeded", 100, generation)
        return await super().poll(task_id)

    def parse_poll(self, task_id: str, answer: Answer) -> TaskState:
        body = answer.body
        status = str(body.get("status") or "").lower()
        progress = body.get("progress")
        progress = progress if isinstance(progress, int) and not isinstance(progress, bool) else None
        error = self.error_in_body(answer)
        if status in _FAILED:
            detail = error.message if error is not None else f"status {status}"
            kind = "moderation" if error is not None and error.kind == "moderation" else "task_failed"
            raise RefusedError(f"task {task_id} failed: {detail}", kind=kind, request_id=answer.request_id)
        if error is not None and not has_images(body):
            raise error
        if "data" in body or status in _SUCCEEDED:
            generation = Generation(images=openai_images(body), task_id=task_id, request_id=answer.request_id)
            generation = noted(generation, Answer(body, answer.request_id, error))
            return TaskState(task_id, status or "succeeded", 100, generation)
        return TaskState(task_id, status or "unknown", progress)


def size_rule(size: str, model: str) -> Problem | None:
    """Only the fixed ``WxH`` list travels (tiers map to their square)."""
    allowed = SIZES.get(model, ())
    if to_wxh(size) in allowed:
        return None
    tiers = "1K/2K" + ("/4K" if model == PRO else "")
    return (f"{size} is not offered by the parameters dialect for {model}; allowed: {', '.join(allowed)}",
            f"pick one of the listed WxH sizes (or tiers {tiers})")


DIALECT = Dialect("parameters", ParametersProvider, params=frozenset(MODEL_PARAMS), size_rule=size_rule,
                  response_format=True,
                  summary="OpenAI Images endpoint, nested parameters object, fixed WxH sizes, async tasks")


def register() -> None:
    register_dialect(DIALECT)
