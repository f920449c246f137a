"""Helpers shared by the tests, imported as ``tests.helpers`` (tests never import each other).

``synthetic`` builds datasets on disk without a gateway, ``mock_client`` is an in-process client of
the mock gateway, ``provider_settings`` a stand-in for provider configs, ``chaos`` the invariants a
dataset keeps after crashes, ``servers`` loopback servers (any app, the mock under a profile),
``scripted`` a provider on an ``httpx.MockTransport`` gateway, ``specs`` the spec of a small run against
one loopback gateway, ``gallery_page`` a gallery page read back.
"""

from __future__ import annotations

import os


def cli_env(**extra: str) -> dict[str, str]:
    """The environment for a `wanbatch` subprocess: this one, plain 120-column output, plus ``extra``."""
    env = dict(os.environ)
    env.update({"COLUMNS": "120", "NO_COLOR": "1"})
    env.update(extra)
    return env
