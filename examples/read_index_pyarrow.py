"""Read a dataset's index with pyarrow alone (no wanbatch needed) and open a few images.

    python examples/read_index_pyarrow.py datasets/quickstart
"""

import sys
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.dataset as ds
from PIL import Image

root = Path(sys.argv[1] if len(sys.argv) > 1 else "datasets/quickstart")
index = ds.dataset(root / "index", format="parquet")
ok = index.to_table(filter=pc.field("status") == "ok", columns=["image_id", "prompt", "seed", "path"])
print(f"{ok.num_rows} ok images of {index.count_rows()} slots")
for row in ok.slice(0, 3).to_pylist():
    with Image.open(root / row["path"]) as img:
        print(row["image_id"], img.size, row["seed"], row["prompt"])
