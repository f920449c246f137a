"""Processes under measurement: the mock gateway on its own core, and one contender at a time.

A contender runs as a child (``taskset -c 0`` when available) while a thread samples the resident
memory of it and its children every 50 ms; its CPU time is the ``RUSAGE_CHILDREN`` delta around its
``wait`` (the mock server is a child too but is only reaped at the very end, so it is not counted).
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
KEY_ENV = "BENCH_KEY"
KEY = "sk-bench-not-a-real-key-0000"
WORK = ROOT / "benchmarks" / "_work"
HAS_TASKSET = shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2


def pinned(core: int, cmd: list[str]) -> list[str]:
    return ["taskset", "-c", str(core), *cmd] if HAS_TASKSET else cmd


def env(first_on_path: str | None = None) -> dict[str, str]:
    """The children's environment; ``first_on_path`` shadows this tree's wanbatch (e.g. an old copy).

    This tree comes before the installed package: an editable install may point at another checkout.
    """
    e = dict(os.environ)
    path = [p for p in (first_on_path, str(ROOT), str(ROOT / "benchmarks")) if p]
    e.update({KEY_ENV: KEY, "NO_COLOR": "1", "PYTHONPATH": os.pathsep.join(path)})
    return e


@dataclass
class Measured:
    wall: float
    cpu: float  # user + system seconds of the child (and its waited-for descendants)
    peak_rss_mb: float
    returncode: int
    out: dict[str, Any]
    stderr: str


def measure(cmd: list[str], *, core: int = 0, timeout: float = 600,
            first_on_path: str | None = None) -> Measured:
    """Run ``cmd`` pinned to ``core``; wall time, CPU seconds, peak RSS (incl. children), its JSON stdout."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.Popen(pinned(core, cmd), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env(first_on_path), cwd=WORK, text=True)  # not ROOT: `-m` puts cwd first
    peak = [0]
    stop = threading.Event()

    def sample() -> None:
        try:
            p = psutil.Process(proc.pid)
        except psutil.Error:
            return
        while not stop.is_set():
            try:
                rss = p.memory_info().rss + sum(c.memory_info().rss for c in p.children(recursive=True))
                peak[0] = max(peak[0], rss)
            except psutil.Error:
                pass
            stop.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
    wall = time.perf_counter() - started
    stop.set()
    sampler.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    try:
        out = json.loads(stdout) if stdout.strip() else {}
    except ValueError:
        out = {"raw": stdout[-500:]}
    return Measured(wall, cpu, peak[0] / 2**20, proc.returncode, out, stderr[-2000:])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MockGateway:
    """``wanbatch mock-server`` in its own process, pinned to core 1."""

    def __init__(self, *, latency: float = 0.0, image_kb: float | None = None,
                 extra: tuple[str, ...] = ()) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        cmd = [PY, "-m", "wanbatch", "mock-server", "--port", str(self.port), "--latency", str(latency),
               "--api-key-env", KEY_ENV]
        if image_kb is not None:
            cmd += ["--image-kb", str(image_kb)]
        cmd += list(extra)
        self.proc = subprocess.Popen(pinned(1, cmd), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     env=env(), cwd=ROOT)
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{self.base}/_mock/stats", timeout=1).raise_for_status()
                return
            except httpx.HTTPError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                    self.close()
                    raise RuntimeError(f"the mock gateway did not start: {err[-500:]}") from None
                time.sleep(0.1)

    def cpu(self) -> float:
        """CPU seconds the gateway has used so far (to tell when it, not the client, was the limit)."""
        times = psutil.Process(self.proc.pid).cpu_times()
        return times.user + times.system

    def reset(self) -> None:
        httpx.post(f"{self.base}/_mock/reset", timeout=10).raise_for_status()

    def billed(self) -> int:
        return int(httpx.get(f"{self.base}/_mock/stats", timeout=10).json()["billed"])

    def pipe(self) -> float | None:
        """Seconds from the first generation the gateway took to the last it answered since the reset:
        the run as the gateway saw it, without the client's start-up and its last download."""
        stats = httpx.get(f"{self.base}/_mock/stats?bodies=0", timeout=10).json()
        first, last = stats.get("first_generation_at"), stats.get("last_generation_at")
        return None if first is None or last is None else float(last) - float(first)

    def quota(self) -> dict[str, Any]:
        """The hidden quota and its counters (``throttled``: 429s answered since the last reset)."""
        return dict(httpx.get(f"{self.base}/_mock/quota", timeout=10).json())

    def set_quota(self, **changes: Any) -> None:
        httpx.post(f"{self.base}/_mock/quota", json=changes, timeout=10).raise_for_status()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> MockGateway:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
