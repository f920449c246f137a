"""Where requests go: the ``provider:`` of a spec (or a named one from ``wanbatch.yaml``) →
:class:`ProviderConfig`.

Keys never live in a spec: ``api_key`` is refused and the config only names the environment
variable that holds the key, so a spec (and the manifest written from it) can be shared safely.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path as FsPath
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import ValidationError

from wanbatch.errors import SpecError
from wanbatch.mock.config import FAULTS
from wanbatch.spec.issues import Issues, did_you_mean
from wanbatch.spec.model import KEYS, ProviderConfig, ProviderIn
from wanbatch.spec.yaml_nodes import Document, Path, compose

CONFIG_FILE = "wanbatch.yaml"
_ENV_REF = re.compile(r"\$\{([^}]*)\}")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SECRET_KEYS = {"api_key", "apikey"}
_MOCK_ONLY = ("latency", "scale", "faults")


def strip_secrets(data: Any, path: Path, issues: Issues, doc: Document | None = None) -> Any:
    """Refuse literal API keys anywhere under a provider mapping (and drop them from validation)."""
    if isinstance(data, dict):
        out = {}
        for key, value in data.items():
            if key.lower().replace("-", "_") in _SECRET_KEYS:
                env = data.get("api_key_env", "WAN_API_KEY")
                issues.add((*path, key), "a literal API key does not belong in a spec",
                           f"export the key (export {env}=...) and name the variable in api_key_env",
                           at_key=True, doc=doc)
                continue
            out[key] = strip_secrets(value, (*path, key), issues, doc)
        return out
    if isinstance(data, list):
        return [strip_secrets(v, (*path, i), issues, doc) for i, v in enumerate(data)]
    return data


def resolve_provider(ref: ProviderIn | str, path: Path, issues: Issues, spec_dir: FsPath,
                     env: Mapping[str, str] | None = None) -> ProviderConfig | None:
    """The provider a spec names; None (with issues added) when it cannot be used."""
    env = os.environ if env is None else env
    if isinstance(ref, ProviderIn):
        return build_config(ref, path, issues, None, env, default_name=None)
    if ref == "mock":
        return build_config(ProviderIn.model_validate({"type": "mock"}), path, issues, None, env, default_name="mock")
    return _named(ref, path, issues, spec_dir, env)


def _named(name: str, path: Path, issues: Issues, spec_dir: FsPath,
           env: Mapping[str, str]) -> ProviderConfig | None:
    found: dict[str, str] = {}
    for config in _config_files(spec_dir):
        try:
            doc = compose(config.read_text(encoding="utf-8"), str(config))
        except OSError as exc:
            issues.add(path, f"cannot read {config}: {exc.strerror}", "check the file's permissions")
            return None
        except SpecError as exc:
            issues.add(path, f"cannot use {config}: {exc.message} (line {exc.line})", "fix the YAML there")
            return None
        providers = doc.data.get("providers") if isinstance(doc.data, dict) else None
        if not isinstance(providers, dict):
            continue
        for known in providers:
            found.setdefault(known, str(config))
        if name in providers:
            base: Path = ("providers", name)
            data = strip_secrets(providers[name], base, issues, doc)
            try:
                parsed = ProviderIn.model_validate(data)
            except ValidationError as exc:
                issues.add_validation_error(exc, data, lambda p, d: KEYS["provider"], base, doc)
                return None
            return build_config(parsed, base, issues, doc, env, default_name=name)
    where = " or ".join(str(f) for f in _config_paths(spec_dir))
    listing = f"defined: {', '.join(found)}" if found else f"no providers are defined in {where}"
    issues.add(path, f"unknown provider {name!r}; {listing}",
               f"use mock, a mapping with base_url, or define {name} under providers: in {CONFIG_FILE}")
    return None


def _config_paths(spec_dir: FsPath) -> list[FsPath]:
    paths: list[FsPath] = []
    for d in (FsPath.cwd(), spec_dir):
        p = (d / CONFIG_FILE).resolve()
        if p not in paths:
            paths.append(p)
    return paths


def _config_files(spec_dir: FsPath) -> list[FsPath]:
    return [p for p in _config_paths(spec_dir) if p.is_file()]


def build_config(p: ProviderIn, path: Path, issues: Issues, doc: Document | None,
                 env: Mapping[str, str], default_name: str | None) -> ProviderConfig | None:
    """Apply the cross-field rules of a provider mapping written at ``path`` (in ``doc``)."""
    n_before = len(issues.items)
    given = p.model_fields_set

    def bad(key: str, message: str, hint: str) -> None:
        issues.add((*path, key), message, hint, at_key=True, doc=doc)

    if p.type == "mock" and p.base_url is not None:
        bad("base_url", "base_url is for gateways, but type is mock", "remove type: mock or base_url")
    kind: Literal["mock", "gateway"] = "mock" if p.type == "mock" or (p.type is None and p.base_url is None and default_name == "mock") \
        else "gateway"
    base_url = None
    if kind == "gateway":
        if p.base_url is None:
            issues.add(path, "a gateway provider needs base_url",
                       "add base_url: https://gateway.example/v1, or use provider: mock", doc=doc)
        else:
            base_url = _expand(p.base_url, (*path, "base_url"), issues, doc, env)
        for key in _MOCK_ONLY:
            if key in given:
                bad(key, f"{key} applies only to the mock provider", f"remove {key}")
    if kind == "mock":
        _check_mock(p, path, issues, doc)
    if p.use_async and p.dialect == "flat":
        bad("async", "the flat dialect is synchronous only; async is not available",
            "remove async, or use dialect: parameters or dashscope if the gateway speaks it")
    if "response_format" in given and p.dialect != "parameters":
        bad("response_format", f"response_format applies only to the parameters dialect, not {p.dialect}",
            "remove response_format")
    if not _ENV_NAME.match(p.api_key_env):
        bad("api_key_env", f"must be the name of an environment variable, got {p.api_key_env!r}",
            "write e.g. api_key_env: WAN_API_KEY")
    if len(issues.items) > n_before:
        return None
    host = urlsplit(base_url).hostname if base_url else None
    return ProviderConfig(
        kind=kind,
        name=p.name or default_name or host or "mock",
        base_url=base_url,
        api_key_env=p.api_key_env,
        dialect=p.dialect,
        use_async=p.use_async,
        response_format=p.response_format,
        poll_interval=p.poll_interval if p.poll_interval is not None else (0.05 if kind == "mock" else 5.0),
        latency=(p.latency if p.latency is not None else 0.05) if kind == "mock" else 0.0,
        scale=p.scale,
        faults=dict(p.faults),
    )


def _check_mock(p: ProviderIn, path: Path, issues: Issues, doc: Document | None) -> None:
    if p.dialect == "dashscope":
        issues.add((*path, "dialect"), "the mock gateway speaks flat or parameters, not dashscope",
                   "use dialect: flat or parameters with the mock", doc=doc)
    for name in p.faults:
        if name not in FAULTS:
            guess = did_you_mean(name, FAULTS)
            issues.add((*path, "faults", name), f"unknown fault {name!r}; known: {', '.join(FAULTS)}",
                       f"did you mean {guess!r}?" if guess else "use one of the known faults", at_key=True,
                       doc=doc)
    if sum(p.faults.values()) > 1 + 1e-9:
        issues.add((*path, "faults"), f"fault rates add up to {sum(p.faults.values()):g}; at most 1 is possible",
                   "lower the rates", doc=doc)


def _expand(url: str, path: Path, issues: Issues, doc: Document | None, env: Mapping[str, str]) -> str | None:
    missing: list[str] = []

    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if name in env:
            return env[name]
        missing.append(name)
        return ""

    expanded = _ENV_REF.sub(sub, url)
    if missing:
        names = ", ".join(missing)
        issues.add(path, f"environment variable {names} is not set (used in base_url)",
                   f"export {missing[0]}=... before running, or write the URL out", doc=doc)
        return None
    parts = urlsplit(expanded)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        issues.add(path, "must be an http(s) URL such as https://gateway.example/v1",
                   "include the scheme and host", doc=doc)
        return None
    if parts.username or parts.password or parts.query:
        issues.add(path, "base_url must not carry credentials or a query string (it is recorded in the "
                   "dataset manifest)", "keep the key in the environment and name it in api_key_env", doc=doc)
        return None
    return expanded.rstrip("/")
