"""After a run the index is at most two parts: one large, one of recent rows."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq

import wanbatch
from wanbatch.runner import RunOptions

SPEC = """
    name: parts
    provider: {{type: mock, latency: 0}}
    prompt: "a {{thing}}"
    vars:
      thing: [fox, lamp]
    seeds: {{start: {start}, count: 3}}
    sizes: [1K]
    output: {output}
"""


def test_each_run_leaves_at_most_two_index_parts(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    index = out / "index"
    largest_before = None
    for i in range(4):  # each run flushes its own part; without tidying there would be 4
        spec = wanbatch.load_spec(write_spec(SPEC.format(start=10 * i, output=out), f"s{i}.yaml"))
        result = wanbatch.run(spec, RunOptions())
        assert result.exit_code == 0
        parts = sorted(index.glob("*.parquet"))
        assert len(parts) <= 2, [p.name for p in parts]
        assert pq.read_table(index).num_rows == 6 * (i + 1)
        if i == 3:  # the large part is kept as it is, not rewritten by every run
            assert largest_before in parts
        largest_before = max(parts, key=lambda p: p.stat().st_size)
    # stray small parts (as a crashed writer's recovery leaves) are merged too
    table = pq.read_table(parts[0])
    for k in range(3):
        pq.write_table(table.slice(k, 1), index / f"part-zz-{k}.parquet")
    assert len(list(index.glob("*.parquet"))) == 5
    spec = wanbatch.load_spec(write_spec(SPEC.format(start=10, output=out), "again.yaml"))
    assert wanbatch.run(spec, RunOptions()).exit_code == 0
    assert len(list(index.glob("*.parquet"))) <= 2
    ids = pq.read_table(index, columns=["image_id"]).column("image_id").to_pylist()
    assert len(set(ids)) == 24
