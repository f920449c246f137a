"""Time the resume check: ``Dataset.open(ROOT, create=False).done_image_ids()`` (and failed_image_ids).

    python benchmarks/scale_probe.py ROOT   → prints {"done", "failed", "open_s", "done_s", "failed_s"}
"""

from __future__ import annotations

import json
import sys
import time

from wanbatch.dataset import Dataset


def main(root: str) -> None:
    t0 = time.perf_counter()
    dataset = Dataset.open(root, create=False)
    t1 = time.perf_counter()
    done = dataset.done_image_ids()
    t2 = time.perf_counter()
    failed = dataset.failed_image_ids()
    t3 = time.perf_counter()
    dataset.close()
    print(json.dumps({"done": len(done), "failed": len(failed), "open_s": round(t1 - t0, 3),
                      "done_s": round(t2 - t1, 3), "failed_s": round(t3 - t2, 3)}))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
