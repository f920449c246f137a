"""wanbatch (public API is bound at the end of the core work)."""

__version__ = "0.1.0"
