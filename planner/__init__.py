"""planner: optimization-based planning of collectives, placements and parallelism on GPU clusters."""

__version__ = "0.1.0"
