"""The spec: a YAML file describing a batch, validated and normalised into a :class:`Spec`.

``load_spec(path)`` reads and checks it; every mistake is a :class:`wanbatch.errors.SpecError`
located at its line and column, all reported together.
"""

from wanbatch.models import MAX_SEED, PARAMETERS_SIZES, TIERS, to_wxh
from wanbatch.spec.loader import canonical_params, load_spec
from wanbatch.spec.model import Limits, PromptSpec, ProviderConfig, Spec
from wanbatch.spec.seeds import SeedSpec

__all__ = [
    "MAX_SEED",
    "PARAMETERS_SIZES",
    "TIERS",
    "Limits",
    "PromptSpec",
    "ProviderConfig",
    "SeedSpec",
    "Spec",
    "canonical_params",
    "load_spec",
    "to_wxh",
]
