"""Comparison reports: aligned text tables (also valid Markdown)."""
from __future__ import annotations

COLUMNS = (("collective", "collective", "{}"), ("method", "method", "{}"), ("time_us", "time (us)", "{:.1f}"),
           ("algbw_GBps", "algbw (GB/s)", "{:.1f}"), ("lower_bound_us", "bound (us)", "{:.1f}"),
           ("ratio_to_bound", "ratio to bound", "{:.3f}"), ("synthesis_seconds", "synthesis (s)", "{:.3f}"))


def comparison_table(rows: list[dict], title: str = "", columns=COLUMNS) -> str:
    header = [label for _, label, _ in columns]
    body = [[fmt.format(r[key]) if r.get(key) is not None else "-" for key, _, fmt in columns] for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(header)]
    lines = [f"## {title}", ""] if title else []
    lines.append("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |")
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for b in body:
        lines.append("| " + " | ".join(c.rjust(w) if i >= 2 else c.ljust(w) for i, (c, w) in enumerate(zip(b, widths)))
                     + " |")
    return "\n".join(lines)
