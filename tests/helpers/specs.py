"""The spec of a small run against one loopback gateway (the mock, or a server a test starts), written
to a file: two styles × ``seeds`` seeds at 1K, priced, with keyword overrides for what a test varies."""

from __future__ import annotations

from pathlib import Path

TEMPLATE = """\
name: {label}
model: wan2.7-image-pro
provider: {{base_url: '{base}/v1', api_key_env: {key_env}, dialect: {dialect}{provider}}}
prompt: "{subject}, {{style}}"
vars:
  style: [watercolor, ink]
seeds: {{start: 0, count: {seeds}}}
sizes: [1K]
limits: {{concurrency: {concurrency}, retries: 2{limits}}}
price_per_image: 0.5
output: {output}
"""


def gateway_spec(tmp_path: Path, base: str, *, label: str, key_env: str, seeds: int = 4,
                 concurrency: int = 4, limits: str = "", provider: str = "", dialect: str = "flat",
                 subject: str = "a lighthouse", name: str = "spec.yaml",
                 out: str = "ds") -> tuple[Path, Path]:
    """Write the spec as ``tmp_path/name`` for the gateway at ``base`` (its key in ``$key_env``); returns
    the spec's path and its output folder ``tmp_path/out``. ``limits`` and ``provider`` are extra
    ``key: value`` pairs for those mappings (``"max_images: 10"``)."""
    output = tmp_path / out
    path = tmp_path / name
    path.write_text(TEMPLATE.format(label=label, base=base, key_env=key_env, dialect=dialect,
                                    provider=f", {provider}" if provider else "", subject=subject,
                                    seeds=seeds, concurrency=concurrency,
                                    limits=f", {limits}" if limits else "", output=output),
                    encoding="utf-8")
    return path, output
