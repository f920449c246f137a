"""Native Alibaba Model Studio (DashScope): messages-shaped body, sync or async task endpoints.

``base_url`` is the host root (``https://dashscope-intl.aliyuncs.com``); a trailing ``/api/v1`` is
tolerated. Results list images under ``output.choices[].message.content[]``; async tasks report
``output.task_status``.
"""

from __future__ import annotations

from typing import Any

from wanbatch.errors import RefusedError, TransientError
from wanbatch.providers.base import Answer, Call, Provider, input_uris, noted
from wanbatch.providers.classify import failed_task_kind
from wanbatch.registry import Dialect, Problem, register_dialect
from wanbatch.types import DeliveredImage, Generation, Job, TaskState

SYNC_PATH = "api/v1/services/aigc/multimodal-generation/generation"
ASYNC_PATH = "api/v1/services/aigc/image-generation/generation"
PARAM_KEYS = ("watermark", "thinking_mode", "color_palette", "enable_sequential", "bbox_list")
#: SUSPENDED: the official SDK treats it as alive (docs/protocol.md), so it is polled on.
_RUNNING = {"PENDING", "RUNNING", "SUSPENDED"}
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
            return TaskState(task_id, "succeeded", 100, noted(generation, answer))
        if status in _FINAL_FAILURES:
            error = self.error_in_body(answer)
            detail = error.message if error is not None else _output_message(output)
            kind = _FINAL_FAILURES[status]
            if status == "FAILED" and isinstance(output, dict):
                kind = failed_task_kind(str(output.get("code") or ""), str(output.get("message") or ""), kind)
            raise RefusedError(f"task {task_id} {status.lower()}: {detail}", kind=kind,
                               request_id=answer.request_id)
        if (error := self.error_in_body(answer)) is not None:
            raise error
        raise TransientError(f"task {task_id}: unexpected task_status {status or '(none)'}",
                             kind="bad_response", request_id=answer.request_id)


def dashscope_body(job: Job) -> dict[str, Any]:
    return {"model": job.model, "input": dashscope_input(job), "parameters": dashscope_parameters(job)}


def dashscope_parameters(job: Job) -> dict[str, Any]:
    parameters: dict[str, Any] = {"size": job.size, "n": job.n}
    parameters.update({k: job.wire_params[k] for k in PARAM_KEYS if k in job.wire_params})
    parameters["seed"] = job.seed
    return parameters


def dashscope_input(job: Job) -> dict[str, Any]:
    """``{messages: [{role: user, content: [{image}, …, {text}]}]}``: the input images first, in
    order (the prompt says "image 1", "image 2"), then the instruction (Model Studio's editing
    reference; docs/protocol.md, "Editing")."""
    content: list[dict[str, str]] = [{"image": uri} for uri in input_uris(job)]
    content.append({"text": job.prompt})
    return {"messages": [{"role": "user", "content": content}]}


def output_images(body: dict[str, Any]) -> list[DeliveredImage]:
    """Images of ``output.choices[].message.content[]`` (or the older ``output.results[].url``).

    A ``{type: text}`` item of a choice is the revised prompt of that choice's images; ``usage.size``
    (``"W*H"``) is the size the gateway claims it delivered, checked once an image is downloaded.
    """
    output = body.get("output")
    if not isinstance(output, dict):
        return []
    usage = body.get("usage")
    claimed = usage.get("size") if isinstance(usage, dict) else None
    claimed = claimed if isinstance(claimed, str) and claimed else None
    found: list[tuple[str | None, str]] = []
    for choice in output.get("choices") or []:
        message = choice.get("message") if isinstance(choice, dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        items = [i for i in (content if isinstance(content, list) else []) if isinstance(i, dict)]
        texts = [i.get("text") for i in items if i.get("type", "text") == "text"]
        revised = "\n".join(t for t in texts if isinstance(t, str) and t)
        for item in items:
            if item.get("type", "image") == "image" and "text" not in item:
                found.append((item.get("image") if isinstance(item.get("image"), str) else None, revised))
    for result in output.get("results") or []:
        if isinstance(result, dict):
            found.append((result.get("url") if isinstance(result.get("url"), str) else None, ""))
    return [DeliveredImage(index=k, url=url, revised_prompt=revised, claimed_size=claimed)
            for k, (url, revised) in enumerate(found) if url]


def _output_message(output: Any) -> str:
    if isinstance(output, dict):
        code, message = output.get("code") or "", output.get("message") or ""
        if code or message:
            return f"{code}: {message}" if code and message else str(code or message)
    return "no reason given"


def palette_list_only(key: str, value: Any) -> Problem | None:
    """Model Studio documents ``color_palette`` as a list of 3–10 ``{hex, ratio}`` colours only."""
    if key == "color_palette" and isinstance(value, str):
        return (f"color_palette {value!r} is a theme string; Model Studio takes a list of 3-10 colours",
                'write [{hex: "#C2D1E6", ratio: "40%"}, ...], or use the parameters dialect for theme '
                "strings")
    return None


#: What a spec may set over this dialect; it sends input images (editing, references, image sets).
DIALECT = Dialect("dashscope", DashScopeProvider, params=frozenset(PARAM_KEYS), edits=True,
                  value_rule=palette_list_only,
                  summary="native Alibaba Model Studio: messages-shaped body, sync or async task endpoints")


def register() -> None:
    register_dialect(DIALECT)
