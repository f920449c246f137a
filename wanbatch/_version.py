"""The version of wanbatch: a leaf, so modules inside the package never import the package face."""

__version__ = "0.1.0"
