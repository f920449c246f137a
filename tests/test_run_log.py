"""Without a terminal a run logs a progress line every N seconds, and notes appear when they happen."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import cli_env

SPEC = """
    name: logged
    provider: {{type: mock, latency: {latency}}}
    prompt: "a {{thing}}"
    vars:
      thing: [fox, lamp, forbidden-word, bowl]
    seeds: {{start: 0, count: {count}}}
    sizes: [1K]
    limits: {{concurrency: 2}}
    price_per_image: 0.5
    output: {output}
"""


def start(spec: Path, *extra: str) -> tuple[subprocess.Popen[str], list[tuple[float, str]]]:
    """Run without a terminal (stderr is a pipe); collect stderr lines with the time each arrived."""
    proc = subprocess.Popen([sys.executable, "-m", "wanbatch", "run", str(spec), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env())
    lines: list[tuple[float, str]] = []

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append((time.monotonic(), line.rstrip("\n")))

    threading.Thread(target=read, daemon=True).start()
    return proc, lines


@pytest.mark.timeout(60)
def test_progress_lines_during_the_run_without_a_terminal(
        write_spec: Callable[..., Path], tmp_path: Path) -> None:
    spec = write_spec(SPEC.format(latency=0.15, count=6, output=tmp_path / "out"))
    proc, lines = start(spec, "--log-every", "0.4")
    proc.wait(timeout=50)
    ended = time.monotonic()
    time.sleep(0.2)  # the reader thread drains the pipe
    assert proc.returncode == 1  # the moderated prompt leaves failed slots
    progress = [(t, text) for t, text in lines if "logged: " in text]
    assert len(progress) >= 3, lines
    during = [text for t, text in progress if t < ended - 0.1]
    assert during, "progress lines must appear while the run goes, not only at its end"
    last = progress[-1][1]
    assert re.search(r"^\d\d:\d\d:\d\d logged: 24/24 images \(100%\) · [\d.]+ img/s · eta 0:00 · "
                     r"failed 6 \(moderation 6\) · spent 9\.00$", last), last


@pytest.mark.timeout(60)
def test_the_interrupt_note_appears_when_the_signal_comes(
        write_spec: Callable[..., Path], tmp_path: Path) -> None:
    spec = write_spec(SPEC.format(latency=1.5, count=20, output=tmp_path / "out"))
    proc, lines = start(spec, "--log-every", "30", "--grace", "20")
    deadline = time.monotonic() + 30
    while not (tmp_path / "out").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.8)  # requests are on the wire for 1.5 s
    proc.send_signal(signal.SIGINT)
    signalled = time.monotonic()
    proc.wait(timeout=30)
    exited = time.monotonic()
    time.sleep(0.2)
    assert proc.returncode == 3
    notes = [(t, text) for t, text in lines if text.startswith("note: stopping: finishing 2 requests")]
    assert notes, lines
    assert "Ctrl-C again to stop now" in notes[0][1]
    assert signalled <= notes[0][0] < exited - 0.2, "the note must come when the signal does, before the end"
