"""Query a dataset's index with DuckDB, straight from the Parquet parts.

    pip install duckdb && python examples/query_duckdb.py datasets/quickstart
"""

import sys

import duckdb

root = sys.argv[1] if len(sys.argv) > 1 else "datasets/quickstart"
parts = f"{root}/index/*.parquet"
print(duckdb.sql(f"""
    SELECT size, status, count(*) AS images, round(avg(latency_ms)) AS avg_ms, sum(bytes) AS bytes
    FROM '{parts}' GROUP BY ALL ORDER BY ALL
"""))
print(duckdb.sql(f"""
    SELECT vars['style'] AS style, count(*) AS images
    FROM '{parts}' WHERE status = 'ok' GROUP BY ALL ORDER BY images DESC
"""))
