"""Who a job is: the one canonical JSON and the one job id (a leaf module, no wanbatch imports).

Resume rests on one invariant: the same request always gets the same ``job_id``. So exactly one
piece of code forms the text that is hashed — :class:`JobIds` — and ``job_id()``/``derived_seed()``
are thin calls into it. The text is ``canonical_json`` of the request ``{model, n, params, prompt,
seed, size}`` — plus ``inputs`` (the identities of the input images, in request order: a local
image's sha256, a URL input's URL) for an editing request only, so text-to-image ids never changed;
:class:`JobIds` assembles it from cached parts (a job then costs one concatenation and
one sha256, which keeps plan expansion fast), and tests pin that both forms agree and that known ids
never change.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

__all__ = ["SEED_MASK", "SEED_SALT", "JobIds", "PromptIds", "canonical_json", "derived_seed", "job_id"]

SEED_SALT = b"wanbatch-seed\0"
SEED_MASK = 0x7FFFFFFF
_ID_CHARS = 16


def canonical_json(value: Any) -> str:
    """The one JSON form for identities and the ``params`` column: sorted keys, compact, UTF-8 kept."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class JobIds:
    """Job ids and derived seeds of the requests that share ``model``, ``n`` and ``params``."""

    __slots__ = ("_head", "_tails")

    def __init__(self, model: str, n: int, params: dict[str, Any], inputs: Sequence[str] = ()) -> None:
        # canonical_json's key order is alphabetical: inputs, model, n, params, prompt, seed, size;
        # text-to-image requests have no "inputs" key at all (their ids predate inputs).
        lead = f'"inputs":{canonical_json(list(inputs))},' if inputs else ""
        self._head = (f'{{{lead}"model":{canonical_json(model)},"n":{canonical_json(n)},'
                      f'"params":{canonical_json(params)},"prompt":')
        self._tails: dict[str, str] = {}

    def for_prompt(self, prompt: str) -> PromptIds:
        return PromptIds(self, self._head + canonical_json(prompt))

    def tail(self, size: str) -> str:
        tail = self._tails.get(size)
        if tail is None:
            tail = self._tails[size] = f',"size":{canonical_json(size)}}}'
        return tail


class PromptIds:
    """The ids of one rendered prompt, for any size and seed."""

    __slots__ = ("_ids", "_prefix", "_with_prompt")

    def __init__(self, ids: JobIds, with_prompt: str) -> None:
        self._ids = ids
        self._with_prompt = with_prompt
        self._prefix = with_prompt + ',"seed":'

    def job_id(self, size: str, seed: int) -> str:
        """16 hex chars of sha256 over the canonical request."""
        text = f"{self._prefix}{seed:d}{self._ids.tail(size)}"
        return hashlib.sha256(text.encode()).hexdigest()[:_ID_CHARS]

    def derived_seed(self, size: str) -> int:
        """The seed of a request whose spec gives none: stable, from its content (seed left out)."""
        text = self._with_prompt + self._ids.tail(size)
        return int(hashlib.sha256(SEED_SALT + text.encode()).hexdigest()[:8], 16) & SEED_MASK


def job_id(model: str, prompt: str, size: str, seed: int, n: int, params: dict[str, Any],
           inputs: Sequence[str] = ()) -> str:
    """16 hex chars of sha256 over ``canonical_json({model, prompt, size, seed, n, params})`` (and
    ``inputs``: the input images' identities in order, when there are any)."""
    return JobIds(model, n, params, inputs).for_prompt(prompt).job_id(size, seed)


def derived_seed(model: str, prompt: str, size: str, n: int, params: dict[str, Any],
                 inputs: Sequence[str] = ()) -> int:
    """The seed of a job whose spec gives none: stable, from the request's content."""
    return JobIds(model, n, params, inputs).for_prompt(prompt).derived_seed(size)
