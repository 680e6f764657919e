"""A clock tests move by hand, for everything that takes an injectable clock."""

from __future__ import annotations


class ManualClock:
    """Returns `now`; tests advance it instead of sleeping."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        self.now += seconds
