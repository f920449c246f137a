"""The exceptions wanbatch raises, what each means for a run, and the exit code each carries.

    WanbatchError                 exit 3 unless a subclass says otherwise
    ├── UsageError           exit 2  a bad option or argument; nothing was requested or written
    │   │                            (export into a non-empty folder, an unknown gallery axis, …)
    │   └── SpecError        exit 2  a bad spec, located in its file (SpecErrors: several at once)
    ├── DatasetError         exit 3  the dataset cannot be read or written (permissions, disk full,
    │   │                            a damaged index): the run is aborted, rerun to resume
    │   └── NotADatasetError exit 2  the path given is not a dataset (or, as an output, a folder that
    │                                holds something else): bad input, not a failure of the dataset
    └── GatewayError         exit 3  anything a gateway answered or failed to answer; ``kind`` names it
        ├── TransientError   retry with backoff (429, 408, 5xx, network errors)
        ├── AmbiguousError   a sync call timed out or got 524: the image may be billed; retried
        │                    only within ``limits.ambiguous_retries``
        ├── RefusedError     this job is refused (moderation, bad value, malformed request,
        │                    failed task, bad image): a failed row, no retry
        └── FatalError       the whole run stops at once (401, 403, 404, a missing key, a parameter
                             the dialect cannot send)

Every error carries its exit code as ``exit_code``; the CLI maps errors to messages and codes at one
boundary (``wanbatch.cli.user_errors``), and a run that stops on an error reports that error's code.
Providers translate every httpx error and every gateway answer into exactly one of these at their
boundary, so the runner's retry policy keys off the class alone. Messages never hold API keys.
"""

from __future__ import annotations

from wanbatch.redact import redact

#: Exit codes of every command: done, some images failed, bad input, aborted (resume by rerunning).
EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_ABORTED = 0, 1, 2, 3


class WanbatchError(Exception):
    """Base of every error wanbatch raises on purpose."""

    #: The process exit code when this error ends a command (see the tree above).
    exit_code: int = EXIT_ABORTED


class UsageError(WanbatchError):
    """A bad option or argument (to the CLI or the Python API), found before any work is done."""

    exit_code = EXIT_BAD_INPUT


class SpecError(UsageError):
    """A mistake in a spec, located in its file.

    ``str()`` gives ``file:line:col: field: message`` followed by ``hint`` on its own line.
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        column: int | None = None,
        field: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.message = message
        self.file = file
        self.line = line
        self.column = column
        self.field = field
        self.hint = hint
        super().__init__(self.render())

    @property
    def location(self) -> str:
        parts = [p for p in (self.file, self.line, self.column) if p is not None]
        return ":".join(str(p) for p in parts)

    def render(self) -> str:
        head = self.location
        body = f"{self.field}: {self.message}" if self.field else self.message
        text = f"{head}: {body}" if head else body
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text


class SpecErrors(SpecError):
    """Several spec mistakes at once (validation reports all it finds, in file order)."""

    def __init__(self, errors: list[SpecError]) -> None:
        self.errors = errors
        first = errors[0]
        super().__init__(
            first.message, file=first.file, line=first.line, column=first.column, field=first.field,
            hint=first.hint,
        )

    def render(self) -> str:
        return "\n".join(e.render() for e in self.errors)


class DatasetError(WanbatchError):
    """The dataset cannot be read or written (permissions, disk full, corrupt index)."""

    exit_code = EXIT_ABORTED


class NotADatasetError(DatasetError):
    """The path is not a wanbatch dataset (or, as an output, a folder that holds something else)."""

    exit_code = EXIT_BAD_INPUT


class GatewayError(WanbatchError):
    """A failure talking to a gateway. ``kind`` is the ``error_kind`` recorded in the index."""

    kind: str = "gateway_error"
    attempts: int = 1  # set by the retry policy when it gives up

    def __init__(
        self,
        message: str,
        *,
        kind: str | None = None,
        status: int | None = None,
        retry_after: float | None = None,
        request_id: str | None = None,
    ) -> None:
        message = redact(message)  # a last guard: messages are built masked already (wanbatch.redact)
        super().__init__(message)
        self.message = message
        if kind is not None:
            self.kind = kind
        self.status = status
        self.retry_after = retry_after
        self.request_id = request_id


class TransientError(GatewayError):
    kind = "transient"


class AmbiguousError(GatewayError):
    kind = "ambiguous"


class RefusedError(GatewayError):
    kind = "refused"


class FatalError(GatewayError):
    kind = "fatal"


#: Every ``error_kind`` a failed slot may carry, by what it means to the user:
#: ``refused`` — the gateway (or our checks) said no; asking again gets the same answer.
#: ``transient`` — retries ran out on a passing failure; a plain rerun asks again.
#: ``ambiguous`` — the request went out and no answer came back: the image may have been made and
#: billed, so only ``--retry-failed`` asks again. ("ambiguous" means this and nothing else.)
KIND_CLASSES: dict[str, tuple[str, ...]] = {
    "refused": ("moderation", "invalid_parameter", "invalid_request", "upstream_error", "task_failed",
                "task_unknown", "missing_image", "bad_image", "too_large", "too_slow", "url_expired",
                "too_many_redirects", "unsupported", "refused"),
    "transient": ("rate_limited", "server_error", "network", "download", "bad_response", "transient"),
    # "unreadable_answer": a 2xx whose body cannot be read; "in_doubt": a request no answer was seen
    # for (a crash); "ambiguous": what earlier releases recorded for a 524 or an unreadable answer
    "ambiguous": ("timeout", "proxy_timeout", "unreadable_answer", "in_doubt", "ambiguous"),
}


def kind_class(kind: str) -> str:
    """``refused``, ``transient`` or ``ambiguous`` for an ``error_kind`` (unknown kinds: refused)."""
    return next((cls for cls, kinds in KIND_CLASSES.items() if kind in kinds), "refused")


__all__ = [
    "EXIT_ABORTED",
    "EXIT_BAD_INPUT",
    "EXIT_FAILED",
    "EXIT_OK",
    "KIND_CLASSES",
    "AmbiguousError",
    "DatasetError",
    "FatalError",
    "GatewayError",
    "NotADatasetError",
    "RefusedError",
    "SpecError",
    "SpecErrors",
    "TransientError",
    "UsageError",
    "WanbatchError",
    "kind_class",
]
