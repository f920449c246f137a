"""Plan and run a spec from Python, then look at what it produced.

    python examples/run_from_python.py [pipelines/quickstart.yaml]
"""

import sys

import wanbatch

spec = wanbatch.load_spec(sys.argv[1] if len(sys.argv) > 1 else "pipelines/quickstart.yaml")
plan = wanbatch.plan(spec)
print(f"{spec.name}: {plan.job_count} jobs, {plan.image_count} images, by size {plan.by_size()}")
for prompt in plan.sample_prompts(3):
    print("  e.g.", prompt)

result = wanbatch.run(spec)  # inside an event loop: `await wanbatch.run_async(spec)`
print(f"run {result.run_id}: exit {result.exit_code}, {result.stats.done_images} new images, "
      f"{result.stats.skipped_images} already there")

table = wanbatch.read_index(result.root)  # one row per image slot
print(table.select(["image_id", "status", "seed", "size", "width", "height", "path"]).slice(0, 5))
