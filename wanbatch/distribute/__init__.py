"""Scale out: run the shards of one spec on a Ray cluster (local or remote) into one dataset folder.

    from wanbatch.distribute import run_on_ray
    report = run_on_ray("pipelines/big.yaml", shards=8, address="auto")
    print(report.exit_code, report.totals["done_images"])

Ray is optional (``pip install 'wanbatch[ray]'``); it is imported only when a run starts.
"""

from .ray_runner import ClusterError, RayRunReport, ShardOutcome, aggregate, run_on_ray

__all__ = ["ClusterError", "RayRunReport", "ShardOutcome", "aggregate", "run_on_ray"]
