"""``wanbatch mock-server``: the mock gateway on loopback, for users' own tests and benchmarks.

The accepted API key is read from an environment variable named by ``--api-key-env`` (never from
argv, where it would show in ``ps``). Bad options and a busy port exit with status 2.
"""

from __future__ import annotations

import os

import click

from wanbatch.mock.config import DRY_ANSWERS, FAULTS, MockConfig
from wanbatch.mock.profiles import PROFILES
from wanbatch.mock.registry import get_mock_dialect
from wanbatch.mock.server import serve


def _pairs(values: tuple[str, ...], option: str, convert: type[float] | type[int]) -> dict[str, float | int]:
    result: dict[str, float | int] = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or name not in FAULTS:
            raise click.BadParameter(f"{item!r}: expected NAME=VALUE with NAME one of {', '.join(FAULTS)}",
                                     param_hint=option)
        try:
            result[name] = convert(value)
        except ValueError:
            raise click.BadParameter(f"{item!r}: {value!r} is not a number", param_hint=option) from None
    return result


@click.command("mock-server")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8765, show_default=True, type=click.IntRange(0, 65535),
              help="0 = any free port.")
@click.option("--dialect", default=None,
              help="Dialect served at the root, e.g. /v1 (flat, parameters, dashscope, newapi or a "
                   "plugin's; default flat, or the profile's); every dialect is also served under "
                   "/{name}/..., DashScope's /api/v1 always.")
@click.option("--profile", type=click.Choice(list(PROFILES)), default=None,
              help="Behave like a real gateway: seed000 (flat), seed001 (parameters), newapi (stock "
                   "new-api: drops a top-level seed), dashscope. Arrearage then answers 400, as "
                   "DashScope does.")
@click.option("--dry-after", type=click.IntRange(min=0), default=None, metavar="K",
              help="The key runs dry: every generation request after the first K is refused "
                   "(--dry-answer).")
@click.option("--dry-answer", type=click.Choice(list(DRY_ANSWERS)), default="arrearage",
              show_default=True, help="What a dry key answers: 401, 403 or 400 Arrearage.")
@click.option("--latency", default="0", show_default=True,
              help="Seconds per generation, or 'uniform:a,b' or 'lognormal:median,sigma'.")
@click.option("--fault", "faults", multiple=True, metavar="NAME=RATE",
              help=f"Inject a fault: {', '.join(FAULTS)}.")
@click.option("--fail-first", "fail_first", multiple=True, metavar="NAME=K",
              help="The first K requests of each job get this fault.")
@click.option("--file-fail-first", "file_fail_first", multiple=True, metavar="NAME=K",
              help="The first K downloads of each image get this fault: 500, 503 or 403.")
@click.option("--api-key-env", metavar="VAR", help="Accept only the key held by this environment variable.")
@click.option("--moderation-word", "moderation_words", multiple=True,
              help="Prompts containing it are refused (default: forbidden-word).")
@click.option("--url-ttl", type=float, default=86400.0, show_default=True,
              help="Seconds image URLs stay valid.")
@click.option("--scale", type=float, default=1.0, show_default=True, help="Shrink delivered images (0-1].")
@click.option("--image-kb", type=float, default=None,
              help="Approximate PNG size in KB (default: ~25000 at 4K).")
@click.option("--hang", type=float, default=600.0, show_default=True, help="Seconds a 'timeout' fault hangs.")
@click.option("--task-duration", type=float, default=None,
              help="Seconds an async task takes (default: latency).")
@click.option("--submit-latency", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Seconds an async submission takes to answer (a slow-submit gateway).")
@click.option("--max-inflight", type=click.IntRange(min=1), default=None,
              help="Hidden quota: generations in progress at once; 429 beyond (not billed).")
@click.option("--quota-rpm", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Hidden quota: generations accepted per minute (sliding window); 429 beyond.")
@click.option("--quota-window", type=click.FloatRange(min=0, min_open=True), default=60.0, show_default=True,
              help="Seconds of the --quota-rpm sliding window (the rate is scaled to it).")
@click.option("--quota-retry-after", type=click.FloatRange(min=0), default=None,
              help="Send this Retry-After (seconds) with quota 429s (default: none, as real gateways).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the fault and latency RNG.")
def mock_server(
    host: str,
    port: int,
    dialect: str | None,
    profile: str | None,
    dry_after: int | None,
    dry_answer: str,
    latency: str,
    faults: tuple[str, ...],
    fail_first: tuple[str, ...],
    file_fail_first: tuple[str, ...],
    api_key_env: str | None,
    moderation_words: tuple[str, ...],
    url_ttl: float,
    scale: float,
    image_kb: float | None,
    hang: float,
    task_duration: float | None,
    submit_latency: float,
    max_inflight: int | None,
    quota_rpm: float | None,
    quota_window: float,
    quota_retry_after: float | None,
    seed: int,
) -> None:
    """Serve the built-in mock gateway (every dialect of docs/protocol.md) until interrupted.

    GET /_mock/requests shows what arrived; GET /_mock/stats what was billed.
    """
    api_key = None
    if api_key_env is not None:
        api_key = os.environ.get(api_key_env)
        if not api_key:
            raise click.BadParameter(f"environment variable {api_key_env} is not set or empty",
                                     param_hint="--api-key-env")
    first = _pairs(fail_first, "--fail-first", int)
    try:
        base: dict[str, object] = dict(PROFILES[profile].config()) if profile else {"dialect": "flat"}
        if dialect is not None:
            base["dialect"] = dialect
        config = MockConfig(
            **base,  # type: ignore[arg-type]
            profile=profile,
            dry_after=dry_after,
            dry_answer=dry_answer,
            latency=latency,
            faults={k: float(v) for k, v in _pairs(faults, "--fault", float).items()},
            fail_first={k: int(v) for k, v in first.items()},
            file_fail_first={k: int(v) for k, v in _pairs(file_fail_first, "--file-fail-first", int).items()},
            fault_seed=seed,
            api_key=api_key,
            moderation_words=list(moderation_words) or ["forbidden-word"],
            url_ttl=url_ttl,
            scale=scale,
            image_kb=image_kb,
            hang=hang,
            task_duration=task_duration,
            submit_latency=submit_latency,
            max_inflight=max_inflight,
            quota_rpm=quota_rpm,
            quota_window=quota_window,
            quota_retry_after=quota_retry_after,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None

    served = config.dialect
    shown = f"{served}, profile {profile}" if profile else served

    def ready(base: str) -> None:
        click.echo(f"wanbatch mock gateway: {base}{get_mock_dialect(served).base_path} ({shown}; every "
                   f"dialect also under {base}/NAME) · {base} (dashscope) · Ctrl-C to stop", err=False)

    try:
        serve(config, host=host, port=port, on_ready=ready)
    except OSError as exc:
        click.echo(f"Error: cannot listen on {host}:{port}: {exc.strerror or exc}", err=True)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        pass
