"""Gateway clients: one module per dialect of docs/protocol.md, all behind the :class:`Provider` ABC.

Dialects and provider kinds are looked up in :mod:`wanbatch.registry`.
"""

from wanbatch.providers.base import Provider
from wanbatch.providers.dashscope import DashScopeProvider
from wanbatch.providers.factory import check_settings, make_provider, open_client
from wanbatch.providers.flat import FlatProvider
from wanbatch.providers.parameters import ParametersProvider

__all__ = [
    "DashScopeProvider",
    "FlatProvider",
    "ParametersProvider",
    "Provider",
    "check_settings",
    "make_provider",
    "open_client",
]
