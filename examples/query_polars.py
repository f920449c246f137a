"""Explore a dataset's index with polars.

    pip install polars && python examples/query_polars.py datasets/quickstart
"""

import sys

import polars as pl

root = sys.argv[1] if len(sys.argv) > 1 else "datasets/quickstart"
df = pl.read_parquet(f"{root}/index/*.parquet")
print(df.group_by("size", "status").agg(pl.len().alias("images"), pl.col("bytes").sum()).sort("size"))
print(df.filter(pl.col("status") == "ok").select("image_id", "seed", "width", "height", "prompt").head())
