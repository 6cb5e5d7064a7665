"""Parsing of unit-bearing quantities, in one place.

Sizes: plain integers are bytes; binary units KiB, MiB, GiB, TiB (powers of 1024) and
decimal units KB, MB, GB, TB (powers of 1000); `B` is bytes. Bandwidths in description
files are GB/s (1e9 bytes/s) unless a unit string is given ("400Gb/s", "50GB/s").
"""
from __future__ import annotations

import math
import re
from fractions import Fraction

from planner.core.errors import InputError

_SIZE_UNITS = {
    "": 1, "b": 1,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
    "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4,
    "k": 1024, "m": 1024**2, "g": 1024**3,
}
_SIZE_RE = re.compile(r"^\s*([0-9]{1,30}(?:\.[0-9]{1,30})?)\s*([A-Za-z]*)\s*$")
MAX_SIZE = 1 << 50  # 1 PiB: beyond any buffer a GPU holds
MIN_BANDWIDTH_GBPS, MAX_BANDWIDTH_GBPS = 1e-3, 1e6  # 1 MB/s .. 1 PB/s

# Bandwidth units, case-sensitive: B is bytes, b is bits. Multipliers to GB/s.
_BW_UNITS = {
    "": 1.0, "GB/s": 1.0, "GBps": 1.0, "MB/s": 1e-3, "TB/s": 1e3,
    "Gb/s": 0.125, "Gbps": 0.125, "Gbit/s": 0.125, "Mb/s": 0.125e-3, "Tb/s": 125.0,
}
_BW_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?)\s*([A-Za-z/]*)\s*$")


def parse_size(value: object, *, source: str | None = None, field: str | None = "size") -> int:
    """Bytes from `4096`, `"64KiB"`, `"1GiB"`, `"1.5MB"`; must be a positive whole number of bytes."""
    if isinstance(value, bool):
        raise InputError(f"expected a size, got {value!r}", source=source, field=field)
    if isinstance(value, int):
        n = value
    elif isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            raise InputError(f"size must be a whole number of bytes, got {value!r}", source=source, field=field)
        n = int(value)
    elif isinstance(value, str):
        m = _SIZE_RE.match(value)
        if not m or m.group(2).lower() not in _SIZE_UNITS:
            raise InputError(
                f"cannot read size {value!r} (use bytes or a unit: KiB, MiB, GiB, KB, MB, GB)",
                source=source, field=field)
        x = Fraction(m.group(1)) * _SIZE_UNITS[m.group(2).lower()]
        if x.denominator != 1:
            raise InputError(f"size {value!r} is not a whole number of bytes", source=source, field=field)
        n = int(x)
    else:
        raise InputError(f"expected a size, got {type(value).__name__}", source=source, field=field)
    if n <= 0:
        raise InputError(f"size must be positive, got {value!r}", source=source, field=field)
    if n > MAX_SIZE:
        raise InputError(f"size {value!r} is over the limit of 1 PiB", source=source, field=field)
    return n


def parse_bandwidth(value: object, *, source: str | None = None, field: str | None = "bandwidth") -> float:
    """GB/s from a number (already GB/s) or a string with a unit: `"50GB/s"`, `"400Gb/s"` (bits)."""
    if isinstance(value, bool):
        raise InputError(f"expected a bandwidth in GB/s, got {value!r}", source=source, field=field)
    if isinstance(value, (int, float)):
        bw = float(value)
    elif isinstance(value, str):
        m = _BW_RE.match(value)
        if not m:
            raise InputError(f"cannot read bandwidth {value!r} (GB/s number or e.g. '400Gb/s')",
                             source=source, field=field)
        if m.group(2) not in _BW_UNITS:
            raise InputError(f"unknown bandwidth unit {m.group(2)!r} in {value!r} (use GB/s or Gb/s)",
                             source=source, field=field)
        bw = float(m.group(1)) * _BW_UNITS[m.group(2)]
    else:
        raise InputError(f"expected a bandwidth in GB/s, got {type(value).__name__}", source=source, field=field)
    if not math.isfinite(bw) or bw <= 0:
        raise InputError(f"bandwidth must be positive, got {value!r}", source=source, field=field)
    if not MIN_BANDWIDTH_GBPS <= bw <= MAX_BANDWIDTH_GBPS:
        raise InputError(f"bandwidth {value!r} is outside 0.001 .. 1e6 GB/s", source=source, field=field)
    return bw


def parse_nonnegative(value: object, *, source: str | None, field: str) -> float:
    """A finite number >= 0 (latencies, loads)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"expected a number, got {value!r}", source=source, field=field)
    x = float(value)
    if not math.isfinite(x) or x < 0:
        raise InputError(f"must be a finite number >= 0, got {value!r}", source=source, field=field)
    return x


def format_size(n: int) -> str:
    """`1073741824` -> `'1GiB'`; exact binary units only, else bytes."""
    for unit, mult in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n % mult == 0:
            return f"{n // mult}{unit}"
    return f"{n}B"
