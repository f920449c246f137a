"""wanbatch."""
