"""Native Alibaba Model Studio (DashScope): messages-shaped body, sync or async task endpoints.

``base_url`` is the host root (``https://dashscope-intl.aliyuncs.com``); a trailing ``/api/v1`` is
tolerated. Results list images under ``output.choices[].message.content[]``; async tasks report
``output.task_status``.
"""

from __future__ import annotations

from typing import Any

from wanbatch.errors import RefusedError, TransientError
from wanbatch.providers.base import Answer, Call, Provider
from wanbatch.registry import Dialect, register_dialect
from wanbatch.types import DeliveredImage, Generation, Job, TaskState

SYNC_PATH = "api/v1/services/aigc/multimodal-generation/generation"
ASYNC_PATH = "api/v1/services/aigc/image-generation/generation"
PARAM_KEYS = ("watermark", "thinking_mode", "color_palette", "enable_sequential")
_RUNNING = {"PENDING", "RUNNING"}
_FINAL_FAILURES = {"FAILED": "task_failed", "CANCELED": "task_canceled", "UNKNOWN": "task_unknown"}


class DashScopeProvider(Provider):
    dialect = "dashscope"
    supports_async = True

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if self.base_url.endswith("/api/v1"):
            self.base_url = self.base_url[: -len("/api/v1")]

    def generate_call(self, job: Job) -> Call:
        return Call("POST", self.url(SYNC_PATH), json=dashscope_body(job))

    def parse_generation(self, answer: Answer) -> Generation:
        return Generation(images=output_images(answer.body), request_id=answer.request_id)

    def submit_call(self, job: Job) -> Call:
        return Call("POST", self.url(ASYNC_PATH), json=dashscope_body(job),
                    headers={"X-DashScope-Async": "enable"})

    def parse_submit(self, answer: Answer) -> str:
        output = answer.body.get("output")
        task_id = output.get("task_id") if isinstance(output, dict) else None
        if not isinstance(task_id, str) or not task_id:
            raise TransientError("the async submission was answered without output.task_id",
                                 kind="bad_response", request_id=answer.request_id)
        return task_id

    def poll_call(self, task_id: str) -> Call:
        return Call("GET", self.url(f"api/v1/tasks/{self.quote_id(task_id)}"))

    def parse_poll(self, task_id: str, answer: Answer) -> TaskState:
        output = answer.body.get("output")
        status = str(output.get("task_status") or "").upper() if isinstance(output, dict) else ""
        if status in _RUNNING:
            return TaskState(task_id, status.lower())
        if status == "SUCCEEDED":
            generation = Generation(images=output_images(answer.body), task_id=task_id,
                                    request_id=answer.request_id)
            return TaskState(task_id, "succeeded", 100, generation)
        if status in _FINAL_FAILURES:
            kind = _FINAL_FAILURES[status]
            error = self.error_in_body(answer)
            detail = error.message if error is not None else _output_message(output)
            raise RefusedError(f"task {task_id} {status.lower()}: {detail}", kind=kind,
                               request_id=answer.request_id)
        if (error := self.error_in_body(answer)) is not None:
            raise error
        raise TransientError(f"task {task_id}: unexpected task_status {status or '(none)'}",
                             kind="bad_response", request_id=answer.request_id)


def dashscope_body(job: Job) -> dict[str, Any]:
    parameters: dict[str, Any] = {"size": job.size, "n": job.n}
    parameters.update({k: job.params[k] for k in PARAM_KEYS if k in job.params})
    parameters["seed"] = job.seed
    return {
        "model": job.model,
        "input": {"messages": [{"role": "user", "content": [{"text": job.prompt}]}]},
        "parameters": parameters,
    }


def output_images(body: dict[str, Any]) -> list[DeliveredImage]:
    """Images of ``output.choices[].message.content[]`` (or the older ``output.results[].url``)."""
    output = body.get("output")
    if not isinstance(output, dict):
        return []
    urls: list[str | None] = []
    for choice in output.get("choices") or []:
        message = choice.get("message") if isinstance(choice, dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        for item in content if isinstance(content, list) else []:
            if isinstance(item, dict) and item.get("type", "image") == "image" and "text" not in item:
                urls.append(item.get("image") if isinstance(item.get("image"), str) else None)
    for result in output.get("results") or []:
        if isinstance(result, dict):
            urls.append(result.get("url") if isinstance(result.get("url"), str) else None)
    return [DeliveredImage(index=k, url=url) for k, url in enumerate(urls) if url]


def _output_message(output: Any) -> str:
    if isinstance(output, dict):
        code, message = output.get("code") or "", output.get("message") or ""
        if code or message:
            return f"{code}: {message}" if code and message else str(code or message)
    return "no reason given"


#: What a spec may set over this dialect: enable_sequential travels in the body but, until image
#: sets are modelled, only the parameters dialect lets a spec ask for it.
DIALECT = Dialect("dashscope", DashScopeProvider,
                  params=frozenset({"watermark", "thinking_mode", "color_palette"}),
                  summary="native Alibaba Model Studio: messages-shaped body, sync or async task endpoints")


def register() -> None:
    register_dialect(DIALECT)
