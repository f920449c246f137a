"""A stand-in for ``wanbatch.spec.ProviderConfig``: the provider factory reads a Protocol, so any
object with these attributes will do."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Settings:
    kind: str = "gateway"
    name: str = "gateway"
    base_url: str | None = None
    api_key_env: str = "WAN_API_KEY"
    dialect: str = "flat"
    use_async: bool = False
    response_format: str = "url"
    poll_interval: float = 0.01
    latency: float = 0.0
    scale: float | None = None
    faults: dict[str, float] = field(default_factory=dict)
