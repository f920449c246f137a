"""The run's caps: ``max_images`` and ``max_cost`` stop new submissions before they would be exceeded."""

from __future__ import annotations

from ..stats import RunStats


class Budget:
    """Reserves each job's images against the caps before it is submitted (the count is in ``stats``)."""

    def __init__(self, stats: RunStats, *, max_images: int | None, max_cost: float | None,
                 price_per_image: float | None) -> None:
        self.stats = stats
        self.max_images = max_images
        self.max_cost = max_cost if price_per_image is not None else None
        self.price = price_per_image

    def reserve(self, images: int) -> str | None:
        """Count ``images`` as submitted and return None, or return why they would exceed a cap."""
        after = self.stats.submitted_images + images
        if self.max_images is not None and after > self.max_images:
            return f"max_images reached ({self.max_images})"
        if self.max_cost is not None and self.price is not None and after * self.price > self.max_cost:
            return f"max_cost reached ({self.max_cost:g})"
        self.stats.submitted_images = after
        return None
