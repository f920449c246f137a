"""wanbatch against the bare HTTP stacks it is built on: ``python benchmarks/run.py [--quick] [--only NAME]``.

Scenarios (NAME): ``zero`` (zero latency, 100 KB images: throughput and CPU per 1,000 jobs),
``latency`` (1 s per generation: makespan against the ideal), ``big`` (4K PNGs: wanbatch's peak RSS
at two job counts), ``scale`` (plan and resume check over a 1,000,000-job spec), and at a hidden
gateway quota (spec concurrency 64; efficiency = ideal makespan ÷ actual, 429s per image):
``quota`` (8 in flight), ``rpm-quota`` (a per-minute rate over a sliding window), ``quota-change``
(8 → 4 → 16 in flight mid-run), ``quota-5xx`` (8 in flight and 10% random 500s), ``async-submit``
(a slow-submit async gateway with a rate quota: submissions/s against its limit) and ``key-pool`` (two
keys of 8 in flight each against one: the throughput ratio); the first four run
``wanbatch run`` and ``controller`` (a bare httpx loop around ``wanbatch.concurrency``). Contenders run one
at a time, alternating round by round; each number is a median of the rounds. Working data goes to
``benchmarks/_work/`` (git-ignored); a JSON record of every round goes to ``_work/results-*.json``
and a Markdown report to stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import HAS_TASKSET, KEY_ENV, PY, ROOT, WORK, Measured, MockGateway, measure

BEFORE: str | None = None  # --before DIR: a folder holding an older ``wanbatch`` package to compare
CONTENDERS = ("wanbatch", "aiohttp", "httpx", "openai-sdk")
SCRIPTS = {"aiohttp": "bare_aiohttp.py", "httpx": "bare_httpx.py", "openai-sdk": "openai_sdk.py",
           "controller": "bare_controlled.py", "oracle": "bare_controlled.py"}
#: At a hidden quota: the CLI, and the bare httpx loop with the adaptive controller (what it achieves alone).
QUOTA_CONTENDERS = ("wanbatch", "controller")
Row = dict[str, Any]


def spec_text(base: str, *, jobs: int, concurrency: int, size: str, model: str, out: Path,
              retries: int = 2) -> str:
    return (
        "name: bench\n"
        f"model: {model}\n"
        f"provider: {{base_url: '{base}/v1', api_key_env: {KEY_ENV}, dialect: flat}}\n"
        'prompt: "a bench image"\n'
        f"seeds: {{start: 0, count: {jobs}}}\n"
        f"sizes: ['{size}']\n"
        f"limits: {{concurrency: {concurrency}, retries: {retries}, request_timeout: 600s}}\n"
        f"output: '{out}'\n"
    )


def contender_cmd(name: str, base: str, *, jobs: int, concurrency: int, size: str, model: str,
                  out: Path, retries: int = 2, oracle: int | None = None) -> list[str]:
    if name.startswith("wanbatch"):
        spec = out.with_suffix(".yaml")
        spec.write_text(spec_text(base, jobs=jobs, concurrency=concurrency, size=size, model=model, out=out,
                                  retries=retries))
        return [PY, "-m", "wanbatch", "run", str(spec), "--no-progress", "--json"]
    return [PY, str(ROOT / "benchmarks" / SCRIPTS[name]), "--base", f"{base}/v1", "--jobs", str(jobs),
            "--concurrency", str(concurrency), "--size", size, "--model", model, "--out", str(out),
            "--key-env", KEY_ENV, *(["--fixed-limit", str(oracle)] if name == "oracle" and oracle else [])]


def one_round(gw: MockGateway, name: str, tag: str, *, jobs: int, concurrency: int, size: str,
              model: str = "wan2.7-image", retries: int = 2,
              quota_changes: tuple[tuple[float, dict[str, Any]], ...] = (),
              oracle: int | None = None) -> Measured:
    out = WORK / tag / name
    shutil.rmtree(out, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    gw.reset()  # also restores the gateway's configured quota
    if quota_changes:  # counted from the contender's first request, not from its process start
        gw.set_quota(schedule=[[at, change] for at, change in quota_changes])
    m = measure(contender_cmd(name, gw.base, jobs=jobs, concurrency=concurrency, size=size, model=model,
                              out=out, retries=retries, oracle=oracle),
                first_on_path=BEFORE if name == "wanbatch-before" else None)
    m.out["throttled"] = gw.quota()["throttled"]
    m.out["gateway_pipe"] = gw.pipe()
    done = m.out.get("done_images")
    billed = gw.billed()
    m.out["disk_bytes"] = sum(f.stat().st_size for f in (out / "images").rglob("*") if f.is_file())
    if m.returncode != 0 or done != jobs or billed != jobs:
        raise SystemExit(f"{tag}/{name}: exit {m.returncode}, done {done} of {jobs}, billed {billed}\n"
                         f"{m.stderr}")
    shutil.rmtree(out, ignore_errors=True)
    return m


def med(values: list[float]) -> float:
    return statistics.median(values)


def rounds_of(gw: MockGateway, tag: str, rounds: int, log: list[Row], contenders: tuple[str, ...],
              **shape: Any) -> dict[str, list[Measured]]:
    got: dict[str, list[Measured]] = {c: [] for c in contenders}
    for r in range(rounds):
        order = contenders if r % 2 == 0 else tuple(reversed(contenders))
        for name in order:
            cpu_before = gw.cpu()
            m = one_round(gw, name, tag, **shape)
            m.out["mock_cpu"] = gw.cpu() - cpu_before
            got[name].append(m)
            log.append({"scenario": tag, "contender": name, "round": r, **asdict(m)})
            print(f"  {tag} r{r} {name:10s} wall {m.wall:6.2f} s  cpu {m.cpu:6.2f} s  "
                  f"rss {m.peak_rss_mb:6.0f} MB", file=sys.stderr, flush=True)
    return got


# ----------------------------------------------------------------------------------- scenarios


def with_before(contenders: tuple[str, ...]) -> tuple[str, ...]:
    return (*contenders, "wanbatch-before") if BEFORE else contenders


def zero(quick: bool, rounds: int, log: list[Row]) -> str:
    jobs, conc = (500 if quick else 2000), 64
    with MockGateway(latency=0, image_kb=100) as gw:
        got = rounds_of(gw, "zero", rounds, log, with_before(CONTENDERS), jobs=jobs, concurrency=conc,
                        size="1K")
    ceiling = med([m.wall for m in got["aiohttp"]])
    sdk = med([m.wall for m in got["openai-sdk"]])
    lines = [f"### Zero latency: {jobs} jobs, concurrency {conc}, ~100 KB PNGs (median of {rounds})", "",
             "| contender | wall s | jobs/s | CPU s per 1,000 jobs | peak RSS MB | wall ÷ aiohttp "
             "| mock CPU s |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, ms in got.items():
        wall = med([m.wall for m in ms])
        lines.append(f"| {name} | {wall:.2f} | {jobs / wall:.0f} "
                     f"| {med([m.cpu for m in ms]) * 1000 / jobs:.2f} "
                     f"| {med([m.peak_rss_mb for m in ms]):.0f} | {wall / ceiling:.2f} "
                     f"| {med([m.out['mock_cpu'] for m in ms]):.2f} |")
    wb = med([m.wall for m in got["wanbatch"]])
    lines += ["", f"Targets: wanbatch ≤ 1.25× aiohttp → **{wb / ceiling:.2f}×** "
              f"({'met' if wb <= 1.25 * ceiling else 'NOT met'}); wanbatch ≤ ⅓ of the SDK script → "
              f"**{wb / sdk:.2f}×** ({'met' if wb <= sdk / 3 else 'NOT met'})."]
    return "\n".join(lines)


def inner(m: Measured) -> float:
    """The contender's own clock: from its start of work (after imports) to the index written."""
    return float(m.out.get("elapsed_seconds") or m.out.get("elapsed") or m.wall)


def latency(quick: bool, rounds: int, log: list[Row]) -> str:
    jobs, conc, lat = (256 if quick else 1000), 64, 1.0
    ideal = -(-jobs // conc) * lat
    with MockGateway(latency=lat, image_kb=100) as gw:
        got = rounds_of(gw, "latency", rounds, log, CONTENDERS, jobs=jobs, concurrency=conc, size="1K")
    ceiling = med([m.wall for m in got["aiohttp"]])
    inner_ceiling = med([inner(m) for m in got["aiohttp"]])
    lines = [f"### Latency {lat:g} s: {jobs} jobs, concurrency {conc}, ideal makespan {ideal:g} s "
             f"(median of {rounds})", "",
             "| contender | makespan s (process) | ÷ ideal | ÷ aiohttp | in-process s | ÷ aiohttp | CPU s |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, ms in got.items():
        wall, own = med([m.wall for m in ms]), med([inner(m) for m in ms])
        lines.append(f"| {name} | {wall:.2f} | {wall / ideal:.3f} | {wall / ceiling:.3f} | {own:.2f} "
                     f"| {own / inner_ceiling:.3f} | {med([m.cpu for m in ms]):.2f} |")
    wb = med([m.wall for m in got["wanbatch"]])
    lines += ["", f"Target: wanbatch makespan ≤ 1.05× aiohttp → **{wb / ceiling:.3f}×** "
              f"({'met' if wb <= 1.05 * ceiling else 'NOT met'}). "
              "Process makespans include interpreter start-up and imports; "
              "in-process times are each contender's own clock (wanbatch: `elapsed_seconds`)."]
    return "\n".join(lines)


def big(quick: bool, rounds: int, log: list[Row]) -> str:
    counts, conc = ((32, 64) if quick else (50, 200)), 32  # both ≥ concurrency
    with MockGateway(latency=0) as gw:  # default image size: ~25 MB at 4K
        got = {n: rounds_of(gw, f"big{n}", rounds, log, with_before(("wanbatch",)), jobs=n, concurrency=conc,
                            size="4K", model="wan2.7-image-pro") for n in counts}
    lines = [f"### Big images: 4K PNGs, concurrency {conc}, wanbatch only (median of {rounds})", "",
             "| contender | jobs | wall s | MB/s | MB per image | peak RSS MB (incl. children) | CPU s |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    peaks = []
    for (n, name), ms in ((k, v) for n, by in got.items() for k, v in (((n, c), ms) for c, ms in by.items())):
        wall = med([m.wall for m in ms])
        mb = med([m.out["disk_bytes"] for m in ms]) / 1e6
        peak = max(m.peak_rss_mb for m in ms)
        if name == "wanbatch":
            peaks.append(peak)
        lines.append(f"| {name} | {n} | {wall:.2f} | {mb / wall:.0f} | {mb / n:.1f} | {peak:.0f} "
                     f"| {med([m.cpu for m in ms]):.2f} |")
    lines += ["", f"Target: peak RSS < 300 MB and independent of job count → max **{max(peaks):.0f} MB**, "
              f"{counts[0]} vs {counts[1]} jobs differ by {abs(peaks[1] - peaks[0]):.0f} MB "
              f"({'met' if max(peaks) < 300 and abs(peaks[1] - peaks[0]) < 50 else 'NOT met'})."]
    return "\n".join(lines)


def scale(quick: bool, rounds: int, log: list[Row]) -> str:
    subjects, seeds = (100 if quick else 1000), 100
    sizes = ["1K", "2K", "1280*720", "720*1280", "1024*768", "768*1024", "1920*1080", "1080*1920",
             "1536*1536", "1200*900"]
    jobs = subjects * seeds * len(sizes)
    folder = WORK / f"scale{jobs}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "subjects.txt").write_text("".join(f"subject number {i}\n" for i in range(subjects)))
    ds = folder / "ds"
    spec = folder / "spec.yaml"
    spec.write_text(
        "name: scale\nmodel: wan2.7-image\nprompt: '{subject}, studio photo'\n"
        "vars: {subject: {file: subjects.txt}}\n"
        f"seeds: {{start: 0, count: {seeds}}}\nsizes: {json.dumps(sizes)}\noutput: ds\n")
    lines = [f"### Scale: {jobs:,} jobs ({subjects} subjects from a file × {seeds} seeds "
             f"× {len(sizes)} sizes)", ""]
    built = "reused from an earlier run"
    if not (ds / ".synthetic-complete").exists():
        shutil.rmtree(ds, ignore_errors=True)
        m = measure([PY, str(ROOT / "benchmarks" / "scale_data.py"), str(spec), str(ds)], timeout=900)
        if m.returncode != 0:
            raise SystemExit(f"scale_data failed: {m.stderr}")
        built = (f"built in {m.wall:.1f} s: {m.out['rows']:,} rows in {m.out['parts']} parts "
                 f"({m.out['rows_s']} s) and {m.out['files']:,} empty image files ({m.out['files_s']} s)")
        log.append({"scenario": "scale-build", **asdict(m)})
    empty = folder / "no-dataset-here"
    shutil.rmtree(empty, ignore_errors=True)
    steps: list[tuple[str, list[str], Callable[[dict[str, Any]], str]]] = [
        ("plan --json, no dataset",
         [PY, "-m", "wanbatch", "plan", str(spec), "--json", "--output", str(empty)],
         lambda o: f"{o.get('jobs', '?'):,} jobs"),
        (f"plan --json over the {jobs:,}-row dataset (resume check)",
         [PY, "-m", "wanbatch", "plan", str(spec), "--json", "--output", str(ds)],
         lambda o: f"done {o.get('existing', {}).get('done', '?'):,}, todo {o.get('todo_jobs', '?')}"),
        ("DatasetView.open().triage()",
         [PY, str(ROOT / "benchmarks" / "scale_probe.py"), str(ds)],
         lambda o: f"done {o.get('done', '?'):,}, failed {o.get('failed', '?'):,} in {o.get('done_s')} s"),
    ]
    lines += [f"Synthetic dataset: {built}.", "",
              "| step | wall s (process) | peak RSS MB | result |", "|---|---:|---:|---|"]
    results: dict[str, float] = {}
    for label, cmd, show in steps:
        ms = []
        for r in range(rounds):
            m = measure(cmd, timeout=300)
            if m.returncode != 0:
                raise SystemExit(f"scale/{label}: exit {m.returncode}\n{m.stderr}")
            ms.append(m)
            log.append({"scenario": "scale", "step": label, "round": r, **asdict(m)})
            print(f"  scale r{r} {label}: wall {m.wall:.2f} s rss {m.peak_rss_mb:.0f} MB",
                  file=sys.stderr, flush=True)
        wall, peak = med([m.wall for m in ms]), max(m.peak_rss_mb for m in ms)
        results[label] = wall
        lines.append(f"| {label} | {wall:.2f} | {peak:.0f} | {show(ms[-1].out)} |")
        results[label + " rss"] = peak
    plan_s = results[steps[0][0]]
    probe_s = results[steps[2][0]]
    within = all(results[s[0] + " rss"] < 1536 for s in steps)
    lines += ["", f"Targets: plan {jobs:,} jobs < 10 s → **{plan_s:.1f} s**; resume check < 5 s → "
              f"**{probe_s:.1f} s** (process incl. imports); each < 1.5 GB → "
              f"{'met' if within else 'NOT met'}."]
    return "\n".join(lines)


def ideal_makespan(jobs: int, lat: float, caps: list[tuple[int, int]]) -> float:
    """Shortest makespan when generations of ``lat`` s fill the in-flight cap;
    ``caps`` = (from round, cap)."""
    rounds, left = 0, jobs
    while left > 0:
        left -= [cap for start, cap in caps if start <= rounds][-1]
        rounds += 1
    return rounds * lat


def quota_run(tag: str, title: str, quick: bool, rounds: int, log: list[Row], *, mock: tuple[str, ...],
              caps: list[tuple[int, int]], oracle: int | None, jobs: tuple[int, int] = (64, 400),
              ideal: Callable[[int, float], float] | None = None) -> str:
    """One hidden-quota scenario: ``wanbatch run`` with spec concurrency 64, the controller alone around
    bare httpx, and (``oracle``) the same loop told the quota in advance (a fixed limit): the practical
    ceiling on this machine. ``caps`` (from round, in-flight cap) define the ideal and mid-run changes."""
    lat = 0.2 if quick else 0.5
    n = jobs[0] if quick else jobs[1]
    conc = 64
    best = ideal(n, lat) if ideal else ideal_makespan(n, lat, caps)
    changes = tuple((start * lat, {"max_inflight": cap}) for start, cap in caps[1:])
    if quick:  # a smoke test: the CLI only where the quota is fixed, to stay under 3 minutes in all
        contenders: tuple[str, ...] = QUOTA_CONTENDERS if tag == "quota" else ("controller",)
    else:
        contenders = QUOTA_CONTENDERS if oracle is None else (*QUOTA_CONTENDERS, "oracle")
    with MockGateway(latency=lat, image_kb=100, extra=mock) as gw:
        got = rounds_of(gw, tag, rounds, log, contenders, jobs=n, concurrency=conc, size="1K",
                        retries=40, quota_changes=changes, oracle=oracle)
    moves = ("; quota changes, counted from the first request, at "
             + ", ".join(f"{at:g} s → {c['max_inflight']}" for at, c in changes)
             if changes else "")
    lines = [f"### {title}: {n} images, latency {lat:g} s, spec concurrency {conc}, "
             f"ideal makespan {best:.2f} s (median of {rounds})", "",
             f"Mock: `mock-server --latency {lat:g} --image-kb 100 {' '.join(mock)}`{moves}.", "",
             "| contender | makespan s (process) | in-process s | efficiency (ideal ÷ in-process) "
             "| ÷ oracle | 429s per image | gateway pipe s | ideal ÷ pipe |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    ceiling = med([inner(m) for m in got["oracle"]]) if "oracle" in got else None
    for name, ms in got.items():
        wall, own = med([m.wall for m in ms]), med([inner(m) for m in ms])
        per = med([m.out["throttled"] / n for m in ms])
        pipe = med([m.out["gateway_pipe"] or math.inf for m in ms])
        vs = f"{ceiling / own:.2f}" if ceiling else "–"
        lines.append(f"| {name} | {wall:.2f} | {own:.2f} | {best / own:.2f} | {vs} | {per:.3f} "
                     f"| {pipe:.2f} | {best / pipe:.2f} |")
    own = med([inner(m) for m in got["controller"]])
    per = med([m.out["throttled"] / n for m in got["controller"]])
    lines += ["", f"Goal (issue 15): ≥ 0.90 of the ideal makespan with ≤ 0.3 429s per image → controller "
              f"**{best / own:.2f}** of the ideal"
              + (f", **{ceiling / own:.2f}** of the oracle" if ceiling else "")
              + f", **{per:.3f}** 429s per image (in-process clock: the goal is about the gateway's pipe, "
              "not interpreter start-up)."]
    return "\n".join(lines)


def quota(quick: bool, rounds: int, log: list[Row]) -> str:
    return quota_run("quota", "Hidden quota of 8 in flight", quick, rounds, log, mock=("--max-inflight", "8"),
                     caps=[(0, 8)], oracle=8)


def rpm_quota(quick: bool, rounds: int, log: list[Row]) -> str:
    # 16 per second over a sliding 2 s window (32 per window): 8 in flight at 0.5 s; 40/s (80) at 0.2 s
    rate = 40 if quick else 16
    window = 2.0

    def ideal(n: int, lat: float) -> float:  # at the quota's sustained rate (the first window may burst)
        return n / rate

    title = f"Hidden rate quota of {rate * 60} per minute (sliding {window:g} s window)"
    return quota_run("rpm-quota", title, quick, rounds, log,
                     mock=("--quota-rpm", str(rate * 60), "--quota-window", f"{window:g}"),
                     caps=[(0, 8)], oracle=8, jobs=(160, 400), ideal=ideal)


def quota_change(quick: bool, rounds: int, log: list[Row]) -> str:
    return quota_run("quota-change", "Quota changes mid-run (8 → 4 → 16 in flight)", quick, rounds, log,
                     mock=("--max-inflight", "8"), caps=[(0, 8), (8, 4), (16, 16)], oracle=None,
                     jobs=(160, 400))


def quota_5xx(quick: bool, rounds: int, log: list[Row]) -> str:
    return quota_run("quota-5xx", "Hidden quota of 8 in flight and 10% random 500s", quick, rounds, log,
                     mock=("--max-inflight", "8", "--fault", "500=0.1"), caps=[(0, 8)], oracle=8)


def run_spec(tag: str, name: str, text: str, gws: list[MockGateway], jobs: int) -> Measured:
    """``wanbatch run`` of a spec ``text`` (``{out}`` filled in) against ``gws``, checked: every image
    done and billed once across the gateways."""
    out = WORK / tag / name
    shutil.rmtree(out, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    for gw in gws:
        gw.reset()
    spec = out.with_suffix(".yaml")
    spec.write_text(text.format(out=out))
    m = measure([PY, "-m", "wanbatch", "run", str(spec), "--no-progress", "--json"])
    billed = sum(gw.billed() for gw in gws)
    m.out["throttled"] = sum(gw.quota()["throttled"] for gw in gws)
    done = m.out.get("done_images")
    if m.returncode != 0 or done != jobs or billed != jobs:
        raise SystemExit(f"{tag}/{name}: exit {m.returncode}, done {done} of {jobs}, billed {billed}\n"
                         f"{m.stderr}")
    shutil.rmtree(out, ignore_errors=True)
    return m


def key_pool(quick: bool, rounds: int, log: list[Row]) -> str:
    """Two equal keys, each with a hidden quota of 8 in flight, against one such key (issue 15: ≥ 1.8×).

    Each key is a mock gateway process of its own (the mock's quota is per process, as a key's is per
    account); the pool is ``provider: {pool: [...]}`` with weight 1 each.
    """
    lat = 0.2 if quick else 0.5
    n, conc = (64 if quick else 400), 64
    head = ("name: bench\nmodel: wan2.7-image\nprompt: \"a bench image\"\n"
            f"seeds: {{{{start: 0, count: {n}}}}}\nsizes: ['1K']\n"
            f"limits: {{{{concurrency: {conc}, retries: 40, request_timeout: 600s}}}}\noutput: '{{out}}'\n")
    extra = ("--max-inflight", "8")
    with MockGateway(latency=lat, image_kb=100, extra=extra) as a, \
            MockGateway(latency=lat, image_kb=100, extra=extra) as b:
        one = head + f"provider: {{{{base_url: '{a.base}/v1', api_key_env: {KEY_ENV}}}}}\n"
        two = head + ("provider:\n  pool:\n"
                      f"    - {{{{name: key-a, base_url: '{a.base}/v1', api_key_env: {KEY_ENV}}}}}\n"
                      f"    - {{{{name: key-b, base_url: '{b.base}/v1', api_key_env: {KEY_ENV}}}}}\n")
        got: dict[str, list[Measured]] = {"one key": [], "two keys": []}
        for r in range(rounds):
            for name in (("one key", "two keys") if r % 2 == 0 else ("two keys", "one key")):
                m = run_spec("key-pool", name.replace(" ", "-"), one if name == "one key" else two,
                             [a] if name == "one key" else [a, b], n)
                got[name].append(m)
                log.append({"scenario": "key-pool", "contender": name, "round": r, **asdict(m)})
                print(f"  key-pool r{r} {name:10s} wall {m.wall:6.2f} s  in-process {inner(m):6.2f} s",
                      file=sys.stderr, flush=True)
    ideal_one, ideal_two = ideal_makespan(n, lat, [(0, 8)]), ideal_makespan(n, lat, [(0, 16)])
    lines = [f"### Key pool: {n} images, latency {lat:g} s, hidden quota of 8 in flight per key, spec "
             f"concurrency {conc} (per member) (median of {rounds})", "",
             f"Mocks: two `mock-server --latency {lat:g} --image-kb 100 --max-inflight 8` processes, one per "
             "key.", "",
             "| contender | makespan s (process) | in-process s | ideal s | efficiency | 429s per image "
             "| images per member |", "|---|---:|---:|---:|---:|---:|---|"]
    for name, ms in got.items():
        best = ideal_one if name == "one key" else ideal_two
        own = med([inner(m) for m in ms])
        split = ", ".join(f"{x['name']} {x['images']}" for x in ms[-1].out.get("members") or []) or "–"
        lines.append(f"| {name} | {med([m.wall for m in ms]):.2f} | {own:.2f} | {best:.2f} "
                     f"| {best / own:.2f} | {med([m.out['throttled'] / n for m in ms]):.3f} | {split} |")
    ratio = med([inner(m) for m in got["one key"]]) / med([inner(m) for m in got["two keys"]])
    lines += ["", f"Goal (issue 15): two equal keys ≥ 1.8× the throughput of one → **{ratio:.2f}×** "
              "(in-process makespans)."]
    return "\n".join(lines)


def sample_accepted(gw: MockGateway, samples: list[tuple[float, int]], stop: threading.Event) -> None:
    """Every 50 ms: (time, generations the gateway accepted so far), until ``stop``."""
    while not stop.is_set():
        with contextlib.suppress(httpx.HTTPError):  # the gateway is busy: skip a sample
            samples.append((time.perf_counter(), int(gw.quota()["accepted"])))
        stop.wait(0.05)


def async_submit(quick: bool, rounds: int, log: list[Row]) -> str:
    """A slow-submit async gateway (each submission answers after 0.5 s) with a hidden rate quota:
    do submissions reach the gateway's rate? ``limits.submit_concurrency`` 1 (the old one-at-a-time)
    against the default 4. The rate is read from the gateway's accepted counter, sampled every 50 ms,
    between 10% and 90% of the submissions (the steady part)."""
    submit_lat, task = 0.5, (0.5 if quick else 1.0)
    rate, window = 6.0, 2.0  # submissions per second the gateway accepts (sliding 2 s window)
    n, conc = (40 if quick else 200), 64
    extra = ("--dialect", "parameters", "--submit-latency", f"{submit_lat:g}", "--task-duration", f"{task:g}",
             "--quota-rpm", f"{rate * 60:g}", "--quota-window", f"{window:g}")
    contenders = {"submit_concurrency 1": 1, "submit_concurrency 4 (default)": 4}
    if quick:  # a smoke test of the default only, to keep --quick under 3 minutes in all
        del contenders["submit_concurrency 1"]
    got: dict[str, list[tuple[Measured, float]]] = {c: [] for c in contenders}
    with MockGateway(latency=task, image_kb=100, extra=extra) as gw:
        for r in range(rounds):
            for name, sc in (contenders.items() if r % 2 == 0 else reversed(list(contenders.items()))):
                text = ("name: bench\nmodel: wan2.7-image\nprompt: \"a bench image\"\n"
                        f"provider: {{{{base_url: '{gw.base}/v1', api_key_env: {KEY_ENV}, "
                        "dialect: parameters, async: true, poll_interval: 0.2}}\n"
                        f"seeds: {{{{start: 0, count: {n}}}}}\nsizes: ['1024x1024']\n"
                        f"limits: {{{{concurrency: {conc}, submit_concurrency: {sc}, retries: 40, "
                        "request_timeout: 600s}}\noutput: '{out}'\n")
                samples: list[tuple[float, int]] = []
                stop = threading.Event()
                sampler = threading.Thread(target=sample_accepted, args=(gw, samples, stop), daemon=True)
                gw.reset()
                sampler.start()
                try:
                    m = run_spec("async-submit", f"sc{sc}", text, [gw], n)
                finally:
                    stop.set()
                    sampler.join()
                lo = next(t for t, c in samples if c >= 0.1 * n)
                hi = next(t for t, c in samples if c >= 0.9 * n)
                per_s = 0.8 * n / (hi - lo) if hi > lo else float("nan")
                got[name].append((m, per_s))
                log.append({"scenario": "async-submit", "contender": name, "round": r,
                            "submissions_per_s": per_s, **asdict(m)})
                print(f"  async-submit r{r} {name:32s} {per_s:5.2f} submissions/s  wall {m.wall:6.2f} s",
                      file=sys.stderr, flush=True)
    lines = [f"### Async submissions: {n} tasks, each submission answers after {submit_lat:g} s, tasks take "
             f"{task:g} s, gateway quota {rate:g} submissions/s (sliding {window:g} s window), spec "
             f"concurrency {conc} (median of {rounds})", "",
             f"Mock: `mock-server {' '.join(extra)} --image-kb 100`.", "",
             "| contender | submissions/s (10%–90%) | ÷ gateway's limit | makespan s (process) "
             "| in-process s | 429s per task |", "|---|---:|---:|---:|---:|---:|"]
    for name, runs in got.items():
        per_s = med([p for _, p in runs])
        lines.append(f"| {name} | {per_s:.2f} | {per_s / rate:.2f} | {med([m.wall for m, _ in runs]):.2f} "
                     f"| {med([inner(m) for m, _ in runs]):.2f} "
                     f"| {med([m.out['throttled'] / n for m, _ in runs]):.3f} |")
    best = med([p for _, p in got["submit_concurrency 4 (default)"]])
    lines += ["", f"Goal (issue 15): submissions at the gateway's rate → **{best:.2f}/s** of {rate:g}/s "
              f"(**{best / rate:.2f}**); one at a time the ceiling is 1 ÷ {submit_lat:g} s = "
              f"{1 / submit_lat:g}/s. A kill costs at most submit_concurrency tasks (in doubt)."]
    return "\n".join(lines)


SCENARIOS: dict[str, Callable[[bool, int, list[Row]], str]] = {
    "zero": zero, "latency": latency, "big": big, "scale": scale, "quota": quota, "rpm-quota": rpm_quota,
    "quota-change": quota_change, "quota-5xx": quota_5xx, "async-submit": async_submit,
    "key-pool": key_pool}


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal"))) / 2**20
    libs = ", ".join(f"{p} {metadata.version(p)}" for p in
                     ("wanbatch", "httpx", "httpx-aiohttp", "aiohttp", "openai", "anyio", "pyarrow",
                      "uvicorn"))
    load = Path("/proc/loadavg").read_text().split()[:3]
    return (f"nproc {subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()} · {cpu} · "
            f"{mem:.1f} GiB RAM · Python {platform.python_version()} · {libs} · load average at start "
            f"{' '.join(load)} · pinning: "
            f"{'mock on core 1, contenders on core 0 (taskset)' if HAS_TASKSET else 'none'}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smaller jobs, one round (about 2 minutes)")
    p.add_argument("--only", choices=sorted(SCENARIOS), action="append",
                   help="run only this scenario (repeatable)")
    p.add_argument("--rounds", type=int, default=None, help="rounds per contender (default 3, --quick 1)")
    p.add_argument("--before", metavar="DIR",
                   help="also run the wanbatch package found in DIR (e.g. an older "
                   "commit's tree) as contender 'wanbatch-before' in zero and big")
    args = p.parse_args()
    global BEFORE
    BEFORE = str(Path(args.before).resolve()) if args.before else None
    rounds = args.rounds or (1 if args.quick else 3)
    WORK.mkdir(parents=True, exist_ok=True)
    log: list[Row] = []
    report = [f"## Benchmark run {time.strftime('%Y-%m-%d %H:%M')} — `python benchmarks/run.py"
              f"{' --quick' if args.quick else ''}{''.join(f' --only {o}' for o in args.only or [])}`", "",
              machine(), ""]
    started = time.perf_counter()
    for name in args.only or list(SCENARIOS):
        print(f"{name} …", file=sys.stderr, flush=True)
        report += [SCENARIOS[name](args.quick, rounds, log), ""]
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    report.append(f"Total {time.perf_counter() - started:.0f} s; load average at the end {load}.")
    stamp = time.strftime("%Y%m%dT%H%M%S")
    (WORK / f"results-{stamp}.json").write_text(json.dumps(log, indent=1, default=str))
    (WORK / f"report-{stamp}.md").write_text("\n".join(report) + "\n")
    print("\n".join(report))


if __name__ == "__main__":
    main()
