"""The one boundary secrets never cross: every text wanbatch writes or prints passes :func:`redact`.

Whoever reads an API key from the environment hands it to :func:`register_secret` (the gateway
provider kind does, in ``check_settings``); from then on :func:`redact` masks it in every message,
row, summary and line the CLI prints, in this process. A provider built directly (the Python API)
also masks its own key in the messages it builds, without registering it process-wide.

What is masked: every occurrence of a registered secret, and every run of at least
:data:`MIN_FRAGMENT` characters that also occurs inside a secret. The second rule is there because
texts get cut: a gateway that echoes the key in a padded message, or any later truncation, can leave
most of a key without the whole of it. Six characters is short enough that a cut key keeps nothing
useful (a 6-character fragment of a 32+ character random key does not narrow a search), and long
enough that ordinary words are not masked by accident for real keys (random strings). Keys shorter
than :data:`MIN_FRAGMENT` are masked only whole (and only from 4 characters on).

Order matters and is fixed here: :func:`redact_short` masks first and truncates after, so a cut can
never expose a part of a key that masking would have caught whole.
"""

from __future__ import annotations

import re
import threading

#: The shortest run of a secret's characters that is masked on its own.
MIN_FRAGMENT = 6
#: What a masked secret (or fragment) becomes.
MASK = "***"
#: Longest message kept after masking (index ``error_message``, run summaries, printed lines).
MAX_MESSAGE = 300

_lock = threading.Lock()
_secrets: set[str] = set()
_fragments: frozenset[str] = frozenset()


def register_secret(secret: str | None) -> None:
    """Mask ``secret`` (and its fragments) in everything :func:`redact` sees from now on."""
    global _fragments
    if not secret or len(secret) < 4:
        return
    with _lock:
        if secret in _secrets:
            return
        _secrets.add(secret)
        _fragments = _fragments_of(_secrets)


def known_secrets() -> frozenset[str]:
    """The secrets registered in this process (for tests and checks that refuse keys in URLs)."""
    return frozenset(_secrets)


#: An inline image (a request's input, a b64 answer echoed in an error): never written out whole.
_DATA_URI = re.compile(r"data:image/[A-Za-z0-9.+-]*;base64,[A-Za-z0-9+/=_-]{16,}")


def _short_data_uri(match: re.Match[str]) -> str:
    head, _, body = match.group(0).partition(",")
    return f"{head},…({len(body)} chars)"


def redact(text: str, *also: str | None) -> str:
    """``text`` with every registered secret (and each of ``also``, for this call only) masked,
    fragments included, and every ``data:image/…;base64,`` URI cut to its head."""
    if not text:
        return text
    if "data:image/" in text:
        text = _DATA_URI.sub(_short_data_uri, text)
    secrets, fragments = _secrets, _fragments
    extra = [s for s in also if s and len(s) >= 4 and s not in secrets]
    if extra:
        secrets = secrets | set(extra)
        fragments = fragments | _fragments_of(extra)
    if not secrets:
        return text
    for secret in sorted(secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    if not fragments or len(text) < MIN_FRAGMENT:
        return text
    hidden = bytearray(len(text))
    found = False
    for i in range(len(text) - MIN_FRAGMENT + 1):
        if text[i:i + MIN_FRAGMENT] in fragments:
            hidden[i:i + MIN_FRAGMENT] = b"\x01" * MIN_FRAGMENT
            found = True
    if not found:
        return text
    out: list[str] = []
    i = 0
    while i < len(text):
        if hidden[i]:
            while i < len(text) and hidden[i]:
                i += 1
            out.append(MASK)
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _fragments_of(secrets: set[str] | list[str]) -> frozenset[str]:
    return frozenset(s[i:i + MIN_FRAGMENT] for s in secrets for i in range(len(s) - MIN_FRAGMENT + 1))


def shorten(text: str, limit: int = MAX_MESSAGE) -> str:
    """``text`` cut to ``limit`` characters (with an ellipsis). Only ever applied to masked text."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def redact_short(text: str, *also: str | None, limit: int = MAX_MESSAGE) -> str:
    """Mask first, then cut: the order that keeps a truncated message free of key fragments."""
    return shorten(redact(text, *also), limit)


def redact_optional(text: str | None) -> str | None:
    return None if text is None else redact(text)


def check_key(name: str, value: str) -> str | None:
    """Why the key in environment variable ``name`` cannot be sent in a header, or None if it can."""
    if any(c in value for c in "\r\n\0"):
        return f"the API key in ${name} contains a line break or NUL; export it without one"
    if not value.isascii() or not value.isprintable():
        return (f"the API key in ${name} contains non-ASCII or control characters; a key is plain ASCII "
                "text (check for a stray quote, a non-breaking space or a smart quote)")
    return None


__all__ = ["MASK", "MAX_MESSAGE", "MIN_FRAGMENT", "check_key", "known_secrets", "redact", "redact_optional",
           "redact_short", "register_secret", "shorten"]
