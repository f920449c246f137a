"""Gallery: rows in spec order, the delivered size, a visible line between rows."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import wanbatch
from wanbatch.gallery import build_gallery
from wanbatch.runner import RunOptions

SPEC = """
    name: order
    provider: {{type: mock, latency: 0}}
    prompt: "a {{thing}}"
    vars:
      thing: [zebra, apple, mango]
    seeds: [3, 1]
    sizes: [1K]
    output: {output}
"""


def test_rows_follow_the_spec_and_sizes_are_as_delivered(
        write_spec: Callable[..., Path], tmp_path: Path) -> None:
    spec_path = write_spec(SPEC.format(output=tmp_path / "out"))
    spec = wanbatch.load_spec(spec_path)
    assert wanbatch.run(spec, RunOptions()).exit_code == 0
    from wanbatch.prune import last_spec_order

    order = last_spec_order(str(tmp_path / "out"))  # what `wanbatch gallery` does without --spec
    for kwargs in ({"order": order}, {"only": wanbatch.plan(spec).image_ids()}):
        html = build_gallery(tmp_path / "out", tmp_path / "g.html", **kwargs).read_text()  # type: ignore[arg-type]
        heads = re.findall(r'class="rowhead">(.*?)</th>', html)
        assert [h.rsplit(" ", 1)[-1] for h in heads] == ["zebra", "apple", "mango"], heads
        assert "1024×1024 (asked 1K)" in html and "1K · " not in html
        assert "tbody tr + tr > * { border-top" in html
