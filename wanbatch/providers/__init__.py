"""Gateway clients: one module per dialect of PROTOCOL.md, all behind the :class:`Provider` ABC."""

from wanbatch.providers.base import Provider
from wanbatch.providers.dashscope import DashScopeProvider
from wanbatch.providers.factory import DIALECTS, make_provider, open_client
from wanbatch.providers.flat import FlatProvider
from wanbatch.providers.parameters import ParametersProvider

__all__ = [
    "DIALECTS",
    "DashScopeProvider",
    "FlatProvider",
    "ParametersProvider",
    "Provider",
    "make_provider",
    "open_client",
]
