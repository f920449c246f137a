"""``load_spec``: a YAML file → a validated, normalised :class:`Spec`, or every mistake at once.

Two passes. Pydantic checks shapes (types, ranges, unknown keys); when they are right, the rules
that tie fields together run (sizes per model and dialect, params per dialect, templates against
vars, files). Every mistake becomes a :class:`SpecError` at the line and column that caused it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path as FsPath
from typing import Any

from pydantic import ValidationError

from wanbatch.errors import SpecError, SpecErrors
from wanbatch.models import MAX_N_SEQUENTIAL, bbox_problem, edit_size_problem, is_default, max_n
from wanbatch.registry import dialect_names, dialects, get_dialect
from wanbatch.spec.files import MAX_SPEC_BYTES, FileProblem, read_text_capped
from wanbatch.spec.inputs import InputTable, default_name
from wanbatch.spec.issues import Issues, describe
from wanbatch.spec.model import KEYS, ParamsIn, PromptSpec, ProviderIn, Spec, SpecIn
from wanbatch.spec.provider import provider_keys, resolve_provider, strip_secrets
from wanbatch.spec.seeds import SEED_KEYS, SeedSpec, range_problem
from wanbatch.spec.sizes import size_problem
from wanbatch.spec.templates import resolve_prompts
from wanbatch.spec.yaml_nodes import Document, Path, compose

_NAME = re.compile(r"^[a-z0-9_-]+$")


def load_spec(path: str | os.PathLike[str], *, text: str | None = None,
              config: str | os.PathLike[str] | None = None, require_env: bool = True,
              upstream: Iterable[str] = ()) -> Spec:
    """Read, validate and normalise a spec; raise :class:`SpecErrors` listing every mistake.

    ``config``: the one ``wanbatch.yaml`` to look named providers up in (the CLI's ``--config``);
    by default the one beside the spec, then the user's (never the current directory's).
    ``require_env=False`` (``validate``, ``plan``: nothing is sent) turns an unset ``${VAR}`` in a
    provider's ``base_url`` into a warning and keeps the URL unexpanded; only a run needs the value.
    ``upstream``: outputs of earlier stages of a chain that have not run yet (absolute paths): image
    vars drawn from one of them plan nothing yet instead of failing (``plan a.yaml b.yaml``).
    """
    source = os.fspath(path)
    if text is None:
        text = _read(source)
    doc = compose(text, source)
    if doc.data is None:
        raise SpecErrors([SpecError("the spec is empty", file=source,
                                    hint="start with prompt: and vars: (see the example in the docs)")])
    if not isinstance(doc.data, dict):
        m = doc.mark(())
        raise SpecErrors([SpecError(f"a spec must be a mapping of keys, got {describe(doc.data)}",
                                    file=source, line=m.line, column=m.column,
                                    hint="write key: value pairs at the top level")])
    issues = Issues(doc)
    data = dict(doc.data)
    if isinstance(data.get("provider"), dict):
        data["provider"] = strip_secrets(data["provider"], ("provider",), issues)
    try:
        raw = SpecIn.model_validate(data)
    except ValidationError as exc:
        issues.add_validation_error(exc, data, _allowed_keys)
        issues.raise_if_any()
        raise AssertionError("unreachable") from None
    issues.raise_if_any()
    return _build(raw, doc, issues, FsPath(source).parent, None if config is None else FsPath(config),
                  require_env, frozenset(upstream))


def _read(source: str) -> str:
    try:
        return read_text_capped(FsPath(source), MAX_SPEC_BYTES, what="spec file")
    except FileNotFoundError:
        raise SpecErrors([SpecError("spec file not found", file=source, hint="check the path")]) from None
    except FileProblem as exc:
        raise SpecErrors([SpecError(f"the spec file {exc.message}", file=source, hint=exc.hint)]) from None


def _allowed_keys(path: Path, data: Any) -> list[str]:
    if path == ():
        return KEYS["spec"]
    if path == ("seeds",):
        return SEED_KEYS["random" if isinstance(data, dict) and "random" in data else "range"]
    if len(path) >= 2 and path[-2] == "vars":
        return KEYS["var"]
    if len(path) == 2 and path[0] == "images":
        return KEYS["image"]
    if path == ("rows",):
        return KEYS["rows"]
    if path[0] == "prompts" and len(path) == 2:
        return KEYS["prompt"]
    if path[0] == "provider":
        return provider_keys(path, data)
    return KEYS.get(str(path[0]), [])


def _build(raw: SpecIn, doc: Document, issues: Issues, spec_dir: FsPath,
           config: FsPath | None = None, require_env: bool = True,
           upstream: frozenset[str] = frozenset()) -> Spec:
    name = raw.name if raw.name is not None else default_name(doc.file)
    if not _NAME.match(name):
        issues.add(("name",), f"must use only a-z, 0-9, _ and -; got {name!r}",
                   f"write e.g. name: {default_name(name)}")
    provider = resolve_provider(raw.provider, ("provider",), issues, spec_dir, config=config,
                                require_env=require_env)
    # the dialect as written, even when the provider has a mistake of its own: checking params
    # against a default dialect would add a misleading second error to the first
    written = raw.provider.dialect if isinstance(raw.provider, ProviderIn) else None
    dialect = provider.dialect if provider else written
    sizes = _sizes(raw, doc, issues, dialect or "flat")
    params = _params(raw.params, issues, dialect)
    most = max_n(bool(raw.params.enable_sequential))
    if raw.n > most:
        why = ("with enable_sequential" if raw.params.enable_sequential
               else f"(1–{MAX_N_SEQUENTIAL} only with params.enable_sequential)")
        issues.add(("n",), f"must be within 1–{most} {why}; got {raw.n}",
                   f"ask for at most {most} images per request; use more seeds for more images")
    if raw.limits.max_cost is not None and raw.price_per_image is None:
        issues.add(("limits", "max_cost"), "max_cost needs price_per_image to know what an image costs",
                   "add price_per_image: <price of one image>", at_key=True)
    if problem := range_problem(raw.seeds):
        issues.add(("seeds",), problem, "lower start or count")
    table = InputTable(fit=raw.fit_inputs)
    prompts = resolve_prompts(raw, issues, spec_dir, table, upstream)
    _edit_rules(raw, doc, prompts, issues, dialect)
    issues.raise_if_any()
    if provider is None:  # resolve_provider records why in ``issues``; this only guards that contract
        raise SpecErrors([SpecError("the provider could not be resolved", file=doc.file, field="provider")])
    return Spec(
        name=name, description=raw.description, model=raw.model, provider=provider, prompts=prompts,
        seeds=SeedSpec.from_input(raw.seeds), sizes=sizes, n=raw.n, params=params, limits=raw.limits,
        price_per_image=raw.price_per_image, sent_params=sent_params(raw.params),
        output=(raw.output if raw.output is not None else "datasets/{name}").replace("{name}", name),
        source=doc.file, warnings=tuple(issues.warnings),
        input_images={s: table.images[s] for p in prompts for v in p.inputs for s in p.vars.get(v, [])},
    )


def _edit_rules(raw: SpecIn, doc: Document, prompts: list[PromptSpec], issues: Issues,
                dialect: str | None) -> None:
    """What editing requests and image sets allow (docs/protocol.md, "Editing"): 2K at most, no
    thinking_mode with inputs, bbox_list one entry per input, and a dialect that can send inputs."""
    editing = any(p.inputs for p in prompts)
    sets = bool(raw.params.enable_sequential)
    where: tuple[str, ...] = ("inputs",) if raw.inputs is not None else (
        ("prompts",) if raw.prompts is not None else ("prompt",))
    if editing or sets:
        what = "with input images" if editing else "with enable_sequential"
        written_as_list = isinstance(doc.data.get("sizes"), list)
        for i, size in enumerate(raw.sizes):
            if (problem := edit_size_problem(size)) is not None:
                issues.add(("sizes", i) if written_as_list else ("sizes",),
                           f"{problem} (this spec asks {what})",
                           "use sizes: [1K] or [2K] (or W*H up to 2048*2048)")
    if editing and raw.params.thinking_mode:
        issues.add(("params", "thinking_mode"),
                   "thinking_mode applies to text-to-image only; this spec sends input images",
                   "remove thinking_mode", at_key=True)
    if editing and dialect in dialect_names() and not get_dialect(dialect).edits:
        can = ", ".join(d.name for d in dialects() if d.edits)
        issues.add(where, f"the {dialect} dialect cannot send input images",
                   f"use a provider whose dialect can ({can})", at_key=True)
    bbox = raw.params.bbox_list
    if bbox is not None:
        for p in prompts:
            if (problem := bbox_problem(bbox, len(p.inputs))) is not None:
                issues.add(("params", "bbox_list"), f"{problem} (template {p.template[:40]!r})",
                           "write one list of boxes per input image, e.g. [[[10, 10, 200, 200]], []]")
                break


def _sizes(raw: SpecIn, doc: Document, issues: Issues, dialect: str) -> list[str]:
    written_as_list = isinstance(doc.data.get("sizes"), list)
    for i, size in enumerate(raw.sizes):
        if problem := size_problem(size, raw.model, dialect):
            issues.add(("sizes", i) if written_as_list else ("sizes",), *problem)
    return list(dict.fromkeys(raw.sizes))


def _params(p: ParamsIn, issues: Issues, dialect: str | None) -> dict[str, Any]:
    for key in sorted(p.model_fields_set):
        value = getattr(p, key)
        if value is None or dialect is None:  # None: the provider is unknown, so is what it accepts
            continue
        if dialect not in dialect_names():
            continue
        if (problem := get_dialect(dialect).param_problem(key)) is not None:
            issues.add(("params", key), *problem, at_key=True)
        elif (problem := get_dialect(dialect).value_problem(key, value)) is not None:
            issues.add(("params", key), *problem)
    return canonical_params(p.model_dump())


def sent_params(p: ParamsIn) -> dict[str, Any]:
    """Params as written, to be sent: ``None`` dropped, documented defaults kept, keys sorted."""
    return {k: v for k, v in sorted(p.model_dump().items()) if v is not None}


def canonical_params(params: dict[str, Any]) -> dict[str, Any]:
    """Params as they identify a job: ``None`` and documented defaults dropped, keys sorted."""
    return {k: v for k, v in sorted(params.items()) if not is_default(k, v)}
