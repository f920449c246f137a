"""The caps: ``limits.max_images`` / ``max_cost`` hold for the *dataset* (its ledger: billed + in doubt,
over every run and shard), ``--max-images-this-run`` / ``--max-cost-this-run`` for one run. A job is
reserved against them before it is submitted, so a cap stops new submissions before it is exceeded."""

from __future__ import annotations

from ..dataset.lease import SharedCaps
from ..stats import RunStats

#: ``RunStats.stop_reason`` of a run stopped by a cap starts with this: resuming would spend more, so
#: the CLI says how to raise the cap instead of "resume with".
CAP_REACHED = "cap reached"


class Budget:
    """Reserves each job's images against the caps before it is submitted (the count is in ``stats``).

    ``spent_before``: images the dataset's ledger held when the run started (billed + in doubt),
    leaving out other runs in progress: ``shared`` counts those live, from their leases, and
    publishes this run's reservations in its own (see :class:`~wanbatch.dataset.lease.SharedCaps`).
    """

    def __init__(self, stats: RunStats, *, max_images: int | None, max_cost: float | None,
                 price_per_image: float | None, spent_before: int = 0, run_max_images: int | None = None,
                 run_max_cost: float | None = None, shared: SharedCaps | None = None) -> None:
        self.stats = stats
        self.max_images = max_images
        self.max_cost = max_cost if price_per_image is not None else None
        self.run_max_images = run_max_images
        self.run_max_cost = run_max_cost if price_per_image is not None else None
        self.price = price_per_image
        self.spent_before = spent_before
        self.shared = shared

    def left(self) -> int | None:
        """Images the caps still allow (None: no cap)."""
        lefts = []
        run = self.stats.submitted_images
        total = self.spent_before + (self.shared.others() if self.shared else 0) + run
        if self.max_images is not None:
            lefts.append(self.max_images - total)
        if self.run_max_images is not None:
            lefts.append(self.run_max_images - run)
        if self.price:
            if self.max_cost is not None:
                lefts.append(int(self.max_cost / self.price + 1e-9) - total)
            if self.run_max_cost is not None:
                lefts.append(int(self.run_max_cost / self.price + 1e-9) - run)
        return max(min(lefts), 0) if lefts else None

    def reserve(self, images: int) -> str | None:
        """Count ``images`` as submitted and return None, or return why they would exceed a cap (or why
        nothing more may be requested: the lease was lost)."""
        shared = self.shared
        if shared is None:
            return self._reserve(images, 0)
        if shared.lease.lost is not None:
            return shared.lease.lost
        if self.max_images is None and self.max_cost is None:  # no dataset cap here: the next heartbeat
            reason = self._reserve(images, 0)                  # tells the others (within BEAT seconds)
            shared.lease.holder.reserved = self.stats.submitted_images
            return reason
        with shared.reserving() as others:
            reason = self._reserve(images, others)
            if reason is None:
                shared.publish(self.stats.submitted_images)
        return reason

    def _reserve(self, images: int, others: int) -> str | None:
        run = self.stats.submitted_images + images
        used = self.spent_before + others + self.stats.submitted_images
        total = used + images
        price = self.price
        running = " and runs in progress" if others else ""
        if self.max_images is not None and total > self.max_images:
            return (f"{CAP_REACHED}: limits.max_images {self.max_images} — the dataset has used "
                    f"{used} (billed + in doubt, all runs{running})")
        if self.max_cost is not None and price is not None and total * price > self.max_cost + 1e-9:
            return (f"{CAP_REACHED}: limits.max_cost {self.max_cost:g} — the dataset has used "
                    f"{used * price:g} (all runs{running})")
        if self.run_max_images is not None and run > self.run_max_images:
            return f"{CAP_REACHED}: --max-images-this-run {self.run_max_images}"
        if self.run_max_cost is not None and price is not None and run * price > self.run_max_cost + 1e-9:
            return f"{CAP_REACHED}: --max-cost-this-run {self.run_max_cost:g}"
        self.stats.submitted_images = run
        return None
