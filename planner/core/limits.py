"""Limits shared across layers: sizes beyond which work is refused rather than left to run."""

MAX_TRANSFERS = 5_000_000  # a schedule the simulator checks and times; beyond, refused rather than run for hours
