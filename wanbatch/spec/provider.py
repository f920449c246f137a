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
from typing import Any
from urllib.parse import unquote, urlsplit

from pydantic import ValidationError

from wanbatch.errors import SpecError
from wanbatch.registry import (
    dialect_names,
    dialects,
    get_dialect,
    get_provider_kind,
    provider_kind_names,
    provider_kinds,
)
from wanbatch.spec.files import MAX_SPEC_BYTES, FileProblem, read_text_capped
from wanbatch.spec.issues import Issues, did_you_mean
from wanbatch.spec.model import KEYS, PoolMember, ProviderConfig, ProviderIn
from wanbatch.spec.yaml_nodes import Document, Path, compose

CONFIG_FILE = "wanbatch.yaml"
_ENV_REF = re.compile(r"\$\{([^}]*)\}")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SECRET_KEYS = {"api_key", "apikey"}


def strip_secrets(data: Any, path: Path, issues: Issues, doc: Document | None = None) -> Any:
    """Refuse literal API keys anywhere under a provider mapping (and drop them from validation)."""
    if isinstance(data, dict):
        out = {}
        for key, value in data.items():
            if key.lower().replace("-", "_") in _SECRET_KEYS:
                env = data.get("api_key_env", "WAN_API_KEY")
                env = env[0] if isinstance(env, list) and env else env
                issues.add((*path, key), "a literal API key does not belong in a spec",
                           f"export the key (export {env}=...) and name the variable in api_key_env",
                           at_key=True, doc=doc)
                continue
            out[key] = strip_secrets(value, (*path, key), issues, doc)
        return out
    if isinstance(data, list):
        return [strip_secrets(v, (*path, i), issues, doc) for i, v in enumerate(data)]
    return data


def provider_keys(path: Path, data: Any) -> list[str]:
    """The keys allowed at ``path`` inside a provider mapping (a pool member's, or the provider's)."""
    return KEYS["pool_member"] if "pool" in path[-2:-1] else KEYS["provider"]


def resolve_provider(ref: ProviderIn | str, path: Path, issues: Issues, spec_dir: FsPath,
                     env: Mapping[str, str] | None = None,
                     config: FsPath | None = None, *, require_env: bool = True) -> ProviderConfig | None:
    """The provider a spec names; None (with issues added) when it cannot be used.

    A named provider is looked up in ``config`` alone when given (``--config``), else in the
    ``wanbatch.yaml`` beside the spec, then in the user's config dir (:func:`config_paths`).
    ``require_env=False``: an unset ``${VAR}`` is a warning and the URL stays unexpanded.
    """
    env = os.environ if env is None else env
    if isinstance(ref, ProviderIn):
        return build_config(ref, path, issues, None, env, default_name=None, require_env=require_env)
    if ref == "mock":
        mock = ProviderIn.model_validate({"type": "mock"})
        return build_config(mock, path, issues, None, env, default_name="mock")
    return _named(ref, path, issues, spec_dir, env, config, require_env)


def user_config_file(env: Mapping[str, str]) -> FsPath:
    """``$XDG_CONFIG_HOME/wanbatch/wanbatch.yaml`` (``~/.config/...`` when unset or relative)."""
    base = env.get("XDG_CONFIG_HOME", "")
    if not base or not os.path.isabs(base):
        home = env.get("HOME") or os.path.expanduser("~")
        base = os.path.join(home, ".config")
    return FsPath(base) / "wanbatch" / CONFIG_FILE


def config_paths(spec_dir: FsPath, env: Mapping[str, str], config: FsPath | None = None) -> list[FsPath]:
    """Where a named provider is looked up, in order.

    Never the current directory: ``cd untrusted-repo && wanbatch run ../spec.yaml`` must not let a
    ``wanbatch.yaml`` there send the key to another host. A file elsewhere only by ``--config``.
    """
    if config is not None:
        return [FsPath(config).absolute()]
    paths: list[FsPath] = []
    for p in ((spec_dir / CONFIG_FILE).absolute(), user_config_file(env)):
        if p not in paths:
            paths.append(p)
    return paths


def _named(name: str, path: Path, issues: Issues, spec_dir: FsPath,
           env: Mapping[str, str], explicit: FsPath | None,
           require_env: bool = True) -> ProviderConfig | None:
    found: dict[str, str] = {}
    paths = config_paths(spec_dir, env, explicit)
    if explicit is not None and not paths[0].is_file():
        issues.add(path, f"the config file {paths[0]} (given by --config) does not exist or is not a file",
                   "check the path given to --config")
        return None
    for config in (p for p in paths if p.is_file()):
        try:
            doc = compose(read_text_capped(config, MAX_SPEC_BYTES, what="config file"), str(config))
        except (OSError, FileProblem) as exc:
            why = exc.message if isinstance(exc, FileProblem) else exc.strerror or str(exc)
            issues.add(path, f"cannot read {config}: {why}", "check the file and its permissions")
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
                issues.add_validation_error(exc, data, provider_keys, base, doc)
                return None
            built = build_config(parsed, base, issues, doc, env, default_name=name,
                                 require_env=require_env)
            return None if built is None else built.model_copy(update={"defined_in": str(config)})
    where = " or ".join(str(f) for f in paths)
    listing = f"defined: {', '.join(found)}" if found else f"no providers are defined in {where}"
    hint = f"use mock, a mapping with base_url, or define {name} under providers: in {CONFIG_FILE}"
    here = (FsPath.cwd() / CONFIG_FILE).absolute()
    if explicit is None and here not in paths and here.is_file():
        hint += f"; {here} (the current directory) is not read unless you pass --config {CONFIG_FILE}"
    issues.add(path, f"unknown provider {name!r}; {listing}", hint)
    return None


def build_config(p: ProviderIn, path: Path, issues: Issues, doc: Document | None,
                 env: Mapping[str, str], default_name: str | None,
                 require_env: bool = True) -> ProviderConfig | None:
    """Apply the cross-field rules of a provider mapping written at ``path`` (in ``doc``)."""
    n_before = len(issues.items)
    given = p.model_fields_set

    def bad(key: str, message: str, hint: str) -> None:
        issues.add((*path, key), message, hint, at_key=True, doc=doc)

    kind_name = p.type or ("mock" if p.base_url is None and default_name == "mock" else "gateway")
    kinds = provider_kind_names()
    if kind_name not in kinds:
        guess = did_you_mean(kind_name, kinds)
        bad("type", f"unknown provider type {kind_name!r}; allowed: {', '.join(kinds)}",
            f"did you mean {guess!r}?" if guess else f"use one of {', '.join(kinds)}")
        return None
    kind = get_provider_kind(kind_name)
    base_url = None
    pooled = p.pool is not None or isinstance(p.api_key_env, list)
    if not kind.needs_base_url and p.base_url is not None:
        bad("base_url", f"base_url is for gateways, but type is {kind_name}",
            f"remove type: {kind_name} or base_url")
    if kind.needs_base_url and p.pool is not None and p.base_url is None:
        pass  # every member names its own gateway (checked in _members)
    elif kind.needs_base_url:
        if p.base_url is None:
            issues.add(path, "a gateway provider needs base_url",
                       "add base_url: https://gateway.example/v1, or use provider: mock", doc=doc)
        else:
            base_url = _expand(p.base_url, (*path, "base_url"), issues, doc, env, require_env)
    for key in sorted(k for k in _kind_options() if k in given and k not in kind.options):
        owners = " or ".join(k_.name for k_ in provider_kinds() if key in k_.options)
        bad(key, f"{key} applies only to the {owners} provider", f"remove {key}")
    if kind.check_options is not None:
        options = {key: getattr(p, key) for key in kind.options}
        for where, message, hint in kind.check_options(options):
            issues.add((*path, *where), message, hint, at_key=len(where) > 1, doc=doc)
    speaks = list(kind.dialect_names())
    if p.dialect not in speaks:
        known = dialect_names()
        if p.dialect in known:
            bad("dialect", f"the {kind_name} provider speaks {', '.join(speaks)}, not {p.dialect}",
                f"use dialect: {' or '.join(speaks)} with the {kind_name} provider")
        else:
            guess = did_you_mean(p.dialect, known)
            bad("dialect", f"unknown dialect {p.dialect!r}; allowed: {', '.join(known)}",
                f"did you mean {guess!r}?" if guess else f"use one of {', '.join(known)}")
    dialect = get_dialect(p.dialect) if p.dialect in speaks else None
    if dialect is not None and p.use_async and not dialect.has_async:
        with_async = [d.name for d in dialects() if d.has_async]
        bad("async", f"the {dialect.name} dialect is synchronous only; async is not available",
            f"remove async, or use dialect: {' or '.join(with_async)} if the gateway speaks it")
    if dialect is not None and "response_format" in given and not dialect.response_format:
        takes = [d.name for d in dialects() if d.response_format]
        bad("response_format", f"response_format applies only to the {' or '.join(takes)} dialect, "
            f"not {dialect.name}", "remove response_format")
    members: list[PoolMember] = []
    if pooled:
        members = _members(p, path, issues, doc, env, base_url, kind.needs_base_url, require_env)
    else:
        assert isinstance(p.api_key_env, str)
        _check_key_env(p.api_key_env, base_url, (*path, "api_key_env"), (*path, "base_url"), issues, doc, env)
    if len(issues.items) > n_before:
        return None
    host = urlsplit(base_url).hostname if base_url else None
    first = members[0] if members else None
    return ProviderConfig(
        kind=kind_name,
        name=p.name or default_name or host or kind_name,
        base_url=first.base_url if first else base_url,
        api_key_env=first.api_key_env if first else str(p.api_key_env),
        members=members,
        dialect=p.dialect,
        use_async=p.use_async,
        response_format=p.response_format,
        poll_interval=p.poll_interval if p.poll_interval is not None
        else kind.defaults.get("poll_interval", 5.0),
        latency=p.latency if p.latency is not None else kind.defaults.get("latency", 0.0),
        scale=p.scale,
        faults=dict(p.faults),
    )


def _check_key_env(var: str, base_url: str | None, at: Path, url_at: Path, issues: Issues,
                   doc: Document | None, env: Mapping[str, str]) -> None:
    """``var`` must name an environment variable, and its key must not be written in ``base_url``."""
    if not _ENV_NAME.match(var):
        issues.add(at, f"must be the name of an environment variable, got {var!r}",
                   "write e.g. api_key_env: WAN_API_KEY", at_key=True, doc=doc)
        return
    key = env.get(var, "").strip()
    if base_url and key and _key_in_url(base_url, key):
        issues.add(url_at, f"base_url contains the API key from ${var}: it would be recorded in the "
                   "dataset manifest and in messages", "remove the key from the URL; it is sent in a header",
                   at_key=True, doc=doc)


def _members(p: ProviderIn, path: Path, issues: Issues, doc: Document | None, env: Mapping[str, str],
             base_url: str | None, needs_base_url: bool, require_env: bool) -> list[PoolMember]:
    """The members of a pool: ``pool: [{name, base_url, api_key_env, weight}, ...]``, or the short
    form ``api_key_env: [KEY_A, KEY_B]`` (one member per key, named after its variable, weight 1).

    Members share the pool's dialect and every other setting, so each receives the same request and a
    job's identity does not depend on which member serves it.
    """
    n_before = len(issues.items)
    members: list[PoolMember] = []
    where: dict[str, Path] = {}
    if not needs_base_url:  # the mock: one in-process gateway per member, whose images only it serves
        issues.add((*path, "pool" if p.pool is not None else "api_key_env"),
                   "a pool of keys is for gateways (a provider with base_url)",
                   "use provider: mock with one key, or pool gateways (mock-server on loopback serves tests)",
                   at_key=True, doc=doc)
        return []
    if isinstance(p.api_key_env, list):
        at = (*path, "api_key_env")
        if p.pool is not None:
            issues.add(at, "a list of keys is the short form of pool:; give one or the other",
                       "move each key into its pool member (api_key_env: KEY_A)", at_key=True, doc=doc)
            return []
        if not p.api_key_env:
            issues.add(at, "the list of key variables is empty", "name at least one, e.g. [KEY_A, KEY_B]",
                       at_key=True, doc=doc)
            return []
        for i, var in enumerate(p.api_key_env):
            _check_key_env(var, base_url, (*at, i), (*path, "base_url"), issues, doc, env)
            if var in where:
                issues.add((*at, i), f"{var} is listed twice", "list each key variable once", doc=doc)
            where[var] = (*at, i)
            members.append(PoolMember(name=var, base_url=base_url, api_key_env=var, weight=1))
        return [] if len(issues.items) > n_before else members
    assert p.pool is not None
    at_pool = (*path, "pool")
    if not p.pool:
        issues.add(at_pool, "the pool is empty", "list its members: pool: [{api_key_env: KEY_A}, ...]",
                   at_key=True, doc=doc)
        return []
    seen: dict[tuple[str | None, str], int] = {}
    for i, m in enumerate(p.pool):
        at = (*at_pool, i)
        if m.dialect is not None and m.dialect != p.dialect:
            issues.add((*at, "dialect"), f"the members of a pool share the pool's dialect ({p.dialect}); "
                       f"this one says {m.dialect}",
                       "every member must take the same request: put a gateway of another dialect in a "
                       "spec of its own (the same jobs, the same dataset)", at_key=True, doc=doc)
        if m.api_key_env is None and isinstance(p.api_key_env, list):
            continue  # already refused above
        var = m.api_key_env if m.api_key_env is not None else str(p.api_key_env)
        url = base_url
        if m.base_url is not None:
            if not needs_base_url:
                issues.add((*at, "base_url"), "base_url is for gateways, not for this provider type",
                           "remove base_url from the member", at_key=True, doc=doc)
            else:
                url = _expand(m.base_url, (*at, "base_url"), issues, doc, env, require_env)
        elif needs_base_url and base_url is None:
            issues.add(at, "this member has no base_url and the pool gives none",
                       "add base_url: https://gateway.example/v1 to the member or to the provider", doc=doc)
        _check_key_env(var, url, (*at, "api_key_env"), (*at, "base_url"), issues, doc, env)
        same = seen.get((url, var))
        if same is not None:
            issues.add(at, f"members {same + 1} and {i + 1} use the same key (${var}) on the same gateway",
                       "a key's quota does not grow by naming it twice: use weight, or another key",
                       doc=doc)
        seen[(url, var)] = i
        host = urlsplit(url).hostname if url else None
        name = m.name or (var if m.api_key_env is not None else host) or f"member-{i + 1}"
        if not name.strip():
            issues.add((*at, "name"), "a member's name must not be empty", "write e.g. name: key-a",
                       at_key=True, doc=doc)
        if name in where:
            issues.add((*at, "name") if m.name else at,
                       f"the name {name!r} is used by two members of the pool; names must be unique",
                       "give each member its own name: (it is recorded in the index's provider column)",
                       at_key=m.name is not None, doc=doc)
        where[name] = at
        members.append(PoolMember(name=name, base_url=url, api_key_env=var, weight=m.weight))
    return [] if len(issues.items) > n_before else members


def _kind_options() -> set[str]:
    """Spec keys that some provider kind takes (and the others refuse)."""
    return {key for kind in provider_kinds() for key in kind.options}


def _expand(url: str, path: Path, issues: Issues, doc: Document | None, env: Mapping[str, str],
            require_env: bool = True) -> str | None:
    missing: list[str] = []

    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if name in env:
            return env[name]
        missing.append(name)
        return ""

    expanded = _ENV_REF.sub(sub, url)
    if missing and not require_env:
        names = ", ".join(missing)
        issues.warn(path, f"environment variable {names} is not set (used in base_url); a run needs it",
                    f"export {missing[0]}=... before running", doc=doc)
        return url.rstrip("/")
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
    if "@" in parts.netloc or parts.query or parts.fragment or "#" in expanded:
        issues.add(path, "base_url must not carry credentials (user@ or user:password@), a query string or "
                   "a fragment: it is recorded in the dataset manifest and in messages",
                   "write scheme://host[:port]/path only; keep the key in the environment and name it in "
                   "api_key_env", doc=doc)
        return None
    return expanded.rstrip("/")


def _key_in_url(url: str, key: str) -> bool:
    return len(key) >= 4 and (key in url or key in unquote(url))
