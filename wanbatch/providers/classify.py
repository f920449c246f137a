"""The one table that turns a gateway's error answer into the wanbatch error it stands for.

Every dialect's answers go through :func:`classify`: an ordered tuple of :class:`Rule` s, the first
that matches wins (httpx keeps its status codes and its exception mapping as data the same way). Each
row of docs/protocol.md's error table is one rule here, so adding a shape a real gateway sends is one
line, and a test per rule pins it.

A rule looks at what every error body has, whatever its family: the HTTP status (200 for an error
inside a successful answer), the code and type (lower-cased), the message, and the phase of the call
(a poll costs nothing, so its failures are retried where a generation's would not be).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from wanbatch.errors import AmbiguousError, FatalError, GatewayError, RefusedError, TransientError

Phase = Literal["generate", "submit", "poll"]

#: Substrings of an error code/type (lower-case) that mean content moderation refused the prompt.
MODERATION_CODES = ("datainspection", "data_inspection", "moderation", "content_policy", "content_filter",
                    "sensitive", "ipinfringement", "safety")
#: Substrings of a message that mean moderation when the code says nothing (older new-api replaces
#: the upstream code with ``bad_response_status_code``; DashScope's message stays).
MODERATION_MESSAGES = ("inappropriate content", "data inspection failed", "datainspectionfailed")
THROTTLING = ("throttling", "rate_limit", "ratelimit", "too_many_requests", "toomanyrequests")
QUOTA = ("insufficient_quota", "quota_exceeded", "insufficient_balance")
#: DashScope's code (HTTP 400, not 403) and message for an account out of money.
ARREARAGE_CODE = "arrearage"
ARREARAGE_MESSAGE = "account is in good standing"
#: new-api's own code for a request body it cannot decode: the only new_api_error that is our fault.
MALFORMED_CODE = "invalid_request"
MALFORMED_MESSAGE = "invalid request body"


@dataclass(frozen=True, slots=True)
class Said:
    """What one error answer says, family-independent."""

    status: int
    code: str  # lower-case
    type: str  # lower-case
    message: str  # as sent (redacted), for the user
    phase: Phase

    @property
    def tags(self) -> str:
        return f"{self.code} {self.type}"

    def code_has(self, words: tuple[str, ...]) -> bool:
        return any(w in self.tags for w in words)

    def message_has(self, words: tuple[str, ...]) -> bool:
        text = self.message.lower()
        return any(w in text for w in words)


@dataclass(frozen=True, slots=True)
class Rule:
    """``when`` matches → raise ``error`` of ``kind``; ``text`` is formatted with the answer's fields."""

    name: str
    when: Callable[[Said], bool]
    error: type[GatewayError]
    kind: str
    text: str


def _status(*codes: int) -> Callable[[Said], bool]:
    return lambda s: s.status in codes


def _moderated(s: Said) -> bool:
    return s.code_has(MODERATION_CODES) or s.message_has(MODERATION_MESSAGES)


def _arrearage(s: Said) -> bool:
    return ARREARAGE_CODE in s.code or s.message_has((ARREARAGE_MESSAGE,))


def _malformed(s: Said) -> bool:
    return s.code == MALFORMED_CODE or s.message.lower().startswith(MALFORMED_MESSAGE)


_OUT_OF_MONEY = ("{where}: the account is out of money ({said}); top it up, then rerun to resume")

#: Non-2xx answers. Order matters: the first match wins.
STATUS_RULES: tuple[Rule, ...] = (
    # 500 too: new-api's ali image handler re-raises an upstream message as bad_response (image.go)
    Rule("arrearage", lambda s: s.status in (400, 402, 403, 500) and _arrearage(s), FatalError, "forbidden",
         _OUT_OF_MONEY),
    Rule("moderation", lambda s: s.status in (400, 500, 502) and _moderated(s), RefusedError, "moderation",
         "refused by content moderation: {said}"),
    Rule("invalid parameter", lambda s: s.status == 400 and (s.code.startswith("invalidparameter")
                                                             or "invalid_parameter" in s.tags),
         RefusedError, "invalid_parameter", "invalid parameter: {said}"),
    Rule("malformed", lambda s: s.status in (400, 500) and _malformed(s), RefusedError, "invalid_request",
         "malformed request ({where}): {said}"),
    Rule("auth", _status(401), FatalError, "auth",
         "{where}: the API key was refused ({said}); check the key in {env} and that base_url is in the "
         "key's region"),
    Rule("forbidden", lambda s: s.status in (402, 403) or (s.status == 429 and s.code_has(QUOTA)), FatalError,
         "forbidden", "{where}: access denied ({said}); check the account's balance, quota and permissions "
         "for this model"),
    Rule("unknown task", lambda s: s.status == 404 and s.phase == "poll", RefusedError, "task_unknown",
         "the gateway does not know this task ({said})"),
    Rule("no route", _status(404, 405), FatalError, "not_found",
         "{where}: no such route ({said}); check base_url and dialect"),
    Rule("rate limited", _status(429), TransientError, "rate_limited", "rate limited: {said}"),
    Rule("proxy cut a poll", lambda s: s.status == 524 and s.phase == "poll", TransientError, "server_error",
         "{where}: proxy timeout while polling"),
    Rule("proxy cut", _status(524), AmbiguousError, "proxy_timeout",
         "{where}: the proxy cut the request; the image may have been made and billed"),
    # new_api_error with any code but invalid_request (bad_response, do_request_failed,
    # "aliAsyncTaskWait timeout", …) is trouble upstream of new-api: retried like any 5xx.
    Rule("server", lambda s: s.status == 408 or s.status >= 500, TransientError, "server_error",
         "{where}: {said}"),
    Rule("redirect", lambda s: 300 <= s.status < 400, FatalError, "not_found",
         "{where}: redirected to {target}; set base_url to the final address"),
    Rule("other", lambda s: True, RefusedError, "invalid_request", "{where}: {said}"),
)

#: Errors inside a 2xx body (a failed call answered 200, or a failed task's poll).
BODY_RULES: tuple[Rule, ...] = (
    Rule("arrearage", _arrearage, FatalError, "forbidden", _OUT_OF_MONEY),
    Rule("throttled", lambda s: s.code_has(THROTTLING) or s.code == "429", TransientError, "rate_limited",
         "rate limited (in a {status} answer): {said}"),
    Rule("moderation", _moderated, RefusedError, "moderation", "refused by content moderation: {said}"),
    Rule("other", lambda s: True, RefusedError, "upstream_error",
         "the gateway answered {status} with an error: {said}"),
)


def classify(said: Said, rules: tuple[Rule, ...], **fields: str) -> tuple[type[GatewayError], str, str]:
    """(error class, kind, message) of the first rule that matches ``said``."""
    for rule in rules:
        if rule.when(said):
            return rule.error, rule.kind, rule.text.format(said=said.message, status=said.status, **fields)
    raise AssertionError("the last rule matches everything")  # pragma: no cover


def failed_task_kind(code: str, message: str, default: str = "task_failed") -> str:
    """The kind of a task that ended FAILED: ``moderation`` when its code or message says so
    (``output.code: DataInspectionFailed``), else ``default``."""
    return "moderation" if _moderated(Said(200, code.lower(), "", message, "poll")) else default
