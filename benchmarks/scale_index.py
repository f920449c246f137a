"""The index at scale: triage, status, plan and compact over an N-row index (default 10,000,000).

    python benchmarks/scale_index.py --rows 1000000          # build (once, reused) and measure
    python benchmarks/scale_index.py --rows 10000000 --grow-from 1000000   # 10 copies, new ids

The synthetic dataset (``benchmarks/_work/index<N>/``) is built from a spec's own plan (so ``plan``
finds its images) as Parquet parts of 100,000 rows in INDEX_SCHEMA, *every column filled* with
realistic sizes (prompt, revised prompt, vars, params, sha256, task id, error text…); 2 % of the
images are failed rows and 1 % of the rows are older duplicates (a failed attempt later retried ok),
so status and compaction have real work to do. No image files are written: the index is what is
measured (``done`` is then 0, every ok row's image counting as missing, which costs the same).

Each step runs as its own process (the CLI as users run it, or a two-line probe), its peak RSS sampled
by psutil every 50 ms (``harness.measure``); compaction runs on a hard-linked copy, so the built
dataset stays as built. The numbers go to stdout as Markdown and to ``_work/scale-index-*.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this tree's wanbatch

import pyarrow as pa
import pyarrow.parquet as pq
from harness import ROOT, WORK, measure

PART_ROWS = 100_000
SIZES = ["1K", "2K", "1280*720", "720*1280", "1024*768", "768*1024", "1920*1080", "1080*1920",
         "1536*1536", "1200*900"]
GOALS_MB = {"triage": 1024, "status": 1024, "compact": 1024}
GOALS_S = {"triage": 60}


def spec_text(rows: int) -> tuple[str, int, int]:
    seeds = 1000 if rows >= 1_000_000 else 100
    subjects = max(1, rows // (seeds * len(SIZES)))
    return ("name: scale\nmodel: wan2.7-image\nprompt: '{subject}, studio photo, soft light'\n"
            "vars: {subject: {file: subjects.txt}}\n"
            f"seeds: {{start: 0, count: {seeds}}}\nsizes: {json.dumps(SIZES)}\noutput: ds\n"
            "price_per_image: 0.2\n", subjects, seeds)


def build(folder: Path, rows: int) -> dict[str, Any]:
    """Write the spec and its dataset (run in this process; the build is not measured)."""
    from wanbatch.dataset.layout import Layout
    from wanbatch.dataset.manifest import ensure_manifest
    from wanbatch.dataset.schema import INDEX_SCHEMA
    from wanbatch.plan import plan
    from wanbatch.spec import load_spec

    text, subjects, _ = spec_text(rows)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "subjects.txt").write_text("".join(f"subject number {i}, a shop with a wooden door\n"
                                                 for i in range(subjects)))
    spec = folder / "spec.yaml"
    spec.write_text(text)
    ds = folder / "ds"
    shutil.rmtree(ds, ignore_errors=True)
    (ds / "index").mkdir(parents=True)
    ensure_manifest(Layout(ds))
    started = time.perf_counter()
    base = datetime(2026, 11, 1, tzinfo=UTC)
    cols: dict[str, list[Any]] = {name: [] for name in INDEX_SCHEMA.names}
    total = parts = 0

    def add(job: Any, k: int, status: str, when: datetime) -> None:
        image_id = f"{job.job_id}-{k}"
        ok = status == "ok"
        values = {
            "image_id": image_id, "job_id": job.job_id, "status": status,
            "error_kind": None if ok else ("moderation" if total % 2 else "server_error"),
            "error_message": None if ok else "the gateway refused the prompt: content policy (code 400)",
            "pipeline": "scale", "model": job.model, "provider": "gateway-eu-1", "prompt": job.prompt,
            "template": job.template, "vars": list(job.vars.items()), "seed": job.seed, "size": job.size,
            "n": job.n, "slot": k, "width": 2048, "height": 2048,
            "params": json.dumps(job.params, sort_keys=True, separators=(",", ":")),
            "revised_prompt": job.prompt + ", highly detailed, cinematic composition, natural colours",
            "path": f"images/{image_id[:2]}/{image_id}.png", "format": "png",
            "bytes": 2_400_000 + total % 999,
            "sha256": f"{total:064x}", "task_id": f"task-{job.job_id}-{total:08d}", "attempts": 1 + total % 3,
            "latency_ms": 9_000 + total % 5000, "created_at": when, "run_id": "20261101T000000Z-abc123",
            "inputs": None,  # text-to-image
        }
        for name, value in values.items():
            cols[name].append(value)

    def write() -> None:
        nonlocal cols, parts
        table = pa.Table.from_pydict(cols, schema=INDEX_SCHEMA)
        pq.write_table(table, ds / "index" / f"part-{parts:013d}-wsynthetic.parquet", compression="zstd",
                       row_group_size=128 * 1024)
        parts += 1
        cols = {name: [] for name in INDEX_SCHEMA.names}

    for number, job in enumerate(plan(load_spec(str(spec))).jobs()):
        if total >= rows:
            break
        when = base + timedelta(seconds=number)
        if number % 100 == 7:  # an earlier failed attempt, retried ok later: a duplicate row
            add(job, 0, "failed", when - timedelta(days=1))
            total += 1
        add(job, 0, "failed" if number % 50 == 3 else "ok", when)
        total += 1
        if len(cols["image_id"]) >= PART_ROWS:
            write()
    if cols["image_id"]:
        write()
    (folder / ".complete").write_text(json.dumps({"rows": total, "parts": parts}))
    return {"rows": total, "parts": parts, "build_s": round(time.perf_counter() - started, 1)}


def grow(source: Path, folder: Path, rows: int) -> dict[str, Any]:
    """A bigger index from a built one: copy ``k`` rewrites every job id as ``job * odd_k + k`` (mod
    2**64: one-to-one within a copy, copies apart with overwhelming odds), so rows stay distinct and
    every other column keeps its real content. The spec plans ``rows`` jobs (its ids are not the rows':
    ``plan`` then measures the lookup of every job, all of them still to do)."""
    import numpy as np
    import pyarrow.compute as pc

    from wanbatch.dataset.idkeys import parse_ids

    started = time.perf_counter()
    parts_in = sorted((source / "ds" / "index").glob("part-*.parquet"))
    per = json.loads((source / ".complete").read_text())["rows"]
    copies = -(-rows // per)
    text, subjects, _ = spec_text(rows)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "subjects.txt").write_text("".join(f"subject number {i}, a shop with a wooden door\n"
                                                 for i in range(subjects)))
    (folder / "spec.yaml").write_text(text)
    ds = folder / "ds"
    shutil.rmtree(ds, ignore_errors=True)
    (ds / "index").mkdir(parents=True)
    shutil.copy(source / "ds" / "wanbatch.json", ds / "wanbatch.json")
    total = parts = 0
    for k in range(copies):
        mult, add = np.uint64((2 * k + 1) * 0x9E3779B97F4A7C15 % 2**64), np.uint64(k)
        for part in parts_in:
            table = pq.read_table(part)
            job, slot, _ = parse_ids(table["image_id"])
            with np.errstate(over="ignore"):
                new = job * mult + add if k else job
            heads = [f"{j:016x}" for j in new.tolist()]
            ids = [f"{h}-{s}" for h, s in zip(heads, slot.tolist(), strict=True)]
            table = table.set_column(0, "image_id", pa.array(ids, pa.string()))
            table = table.set_column(1, "job_id", pa.array(heads, pa.string()))
            head2 = pc.utf8_slice_codeunits(table["image_id"], 0, 2)
            paths = pc.binary_join_element_wise("images/", head2, "/", table["image_id"], ".png", "")
            table = table.set_column(table.schema.get_field_index("path"), "path", paths)
            pq.write_table(table, ds / "index" / f"part-{parts:013d}-wsynthetic.parquet", compression="zstd",
                           row_group_size=128 * 1024)
            parts += 1
            total += table.num_rows
    (folder / ".complete").write_text(json.dumps({"rows": total, "parts": parts}))
    return {"rows": total, "parts": parts, "build_s": round(time.perf_counter() - started, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--grow-from", type=int, metavar="ROWS",
                    help="build by copying the built index of ROWS rows with new ids: minutes, not hours")
    ap.add_argument("--only", action="append", help="triage, triage-shard, status, plan, compact")
    args = ap.parse_args()
    folder = WORK / f"index{args.rows}"
    done = folder / ".complete"
    if not done.exists():
        print(f"building {args.rows:,} rows in {folder} …", file=sys.stderr, flush=True)
        made = grow(WORK / f"index{args.grow_from}", folder, args.rows) if args.grow_from \
            else build(folder, args.rows)
        print(json.dumps(made), file=sys.stderr, flush=True)
    built = json.loads(done.read_text())
    ds, spec = folder / "ds", folder / "spec.yaml"
    py = sys.executable
    probe = ("import json,sys,time; from wanbatch.dataset import DatasetView; t=time.perf_counter(); "
             "s=DatasetView.open(sys.argv[1]).triage({}); "
             "print(json.dumps({{'done': len(s.done), 'failed': len(s.failed), "
             "'unindexed': len(s.unindexed), "
             "'s': round(time.perf_counter()-t, 2)}}))")
    steps = {
        "triage": [py, "-c", probe.format(""), str(ds)],
        "triage-shard": [py, "-c", probe.format("shard=(0, 4)"), str(ds)],
        "status": [py, "-m", "wanbatch", "status", str(ds), "--json"],
        "plan": [py, "-m", "wanbatch", "plan", str(spec), "--json", "--output", str(ds)],
        "compact": [py, "-m", "wanbatch", "compact", str(folder / "copy"), "--json"],
    }
    wanted = args.only or list(steps)
    results: list[dict[str, Any]] = []
    for name in wanted:
        for r in range(args.rounds):
            if name == "compact":
                shutil.rmtree(folder / "copy", ignore_errors=True)
                subprocess.run(["cp", "-al", str(ds), str(folder / "copy")], check=True)
            m = measure(steps[name], timeout=1800, first_on_path=str(ROOT))
            if m.returncode not in (0, 1):
                raise SystemExit(f"{name}: exit {m.returncode}\n{m.stderr}")
            results.append({"step": name, "round": r, **asdict(m)})
            print(f"  {name} r{r}: {m.wall:.1f} s, {m.peak_rss_mb:.0f} MB", file=sys.stderr, flush=True)
    shutil.rmtree(folder / "copy", ignore_errors=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    saved = {"built": built, "results": results}
    (WORK / f"scale-index-{stamp}.json").write_text(json.dumps(saved, indent=1))
    load = os.getloadavg()
    print(f"### Index at scale: {built['rows']:,} rows in {built['parts']} parts "
          f"(load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f})\n")
    print("| step | wall s | CPU s | peak RSS MB | goal | result |\n|---|---:|---:|---:|---|---|")
    for row in results:
        step = row["step"]
        goal = " ".join(g for g in (f"≤ {GOALS_S[step]} s" if step in GOALS_S else "",
                                    f"≤ {GOALS_MB[step]} MB" if step in GOALS_MB else "") if g)
        met = (row["peak_rss_mb"] <= GOALS_MB.get(step, 1e9) and row["wall"] <= GOALS_S.get(step, 1e9))
        out = {k: v for k, v in row["out"].items() if not isinstance(v, (list, dict))}
        shown = ", ".join(f"{k} {v}" for k, v in list(out.items())[:6])
        print(f"| {step} | {row['wall']:.1f} | {row['cpu']:.1f} | {row['peak_rss_mb']:.0f} | "
              f"{(goal + (' met' if met else ' NOT met')) if goal else ''} | {shown} |")


if __name__ == "__main__":
    main()
