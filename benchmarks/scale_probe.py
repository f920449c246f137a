"""Time the resume check: ``DatasetView.open(ROOT).triage()`` (done, failed and unindexed slots).

    python benchmarks/scale_probe.py ROOT   → prints {"done", "failed", "open_s", "done_s", "failed_s"}
    (``done_s`` is the whole triage; ``failed_s`` is kept for the table's shape and is 0)
"""

from __future__ import annotations

import json
import sys
import time

from wanbatch.dataset import DatasetView


def main(root: str) -> None:
    t0 = time.perf_counter()
    view = DatasetView.open(root)
    t1 = time.perf_counter()
    state = view.triage()
    t2 = t3 = time.perf_counter()
    print(json.dumps({"done": len(state.done), "failed": len(state.failed), "open_s": round(t1 - t0, 3),
                      "done_s": round(t2 - t1, 3), "failed_s": round(t3 - t2, 3)}))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
