"""Profiles of real gateways for the mock: which dialect it speaks at the root and how it refuses.

``wanbatch mock-server --profile NAME`` (or ``MockConfig.from_profile(NAME)``) behaves like:

- ``seed000``: the flat gateway of seed document 000 (strict flat body; ``response_format`` as a
  string refused with new-api's 500 ``invalid_request``);
- ``seed001``: the parameters gateway of seed document 001 (nested ``parameters``, fixed ``WxH``
  list, optional ``n``/``response_format``, async tasks);
- ``newapi``: stock new-api in front of DashScope (``relay/channel/ali/image.go``): a top-level seed
  is dropped, ``parameters`` replaces the top-level size and n, unknown fields are kept aside;
- ``dashscope``: Model Studio itself (the official SDK's ``parameters.is_async`` accepted).

All of them answer an account out of money as DashScope does: HTTP 400 ``Arrearage``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Profile:
    name: str
    dialect: str
    summary: str
    new_api_status: int = 500

    def config(self) -> dict[str, Any]:
        return {"dialect": self.dialect, "new_api_status": self.new_api_status, "arrearage_status": 400}


PROFILES: dict[str, Profile] = {p.name: p for p in (
    Profile("seed000", "flat", "flat gateway of seed doc 000 (strict body, sync)"),
    Profile("seed001", "parameters", "parameters gateway of seed doc 001 (nested parameters, async tasks)"),
    Profile("newapi", "newapi", "stock new-api: drops a top-level seed; parameters replace size and n"),
    Profile("dashscope", "dashscope", "Alibaba Model Studio (DashScope) native API"),
)}


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; use one of {', '.join(PROFILES)}") from None
