"""The overview's throughput chart as inline SVG: pure, no JavaScript, no fonts to ship.

One stacked bar per time bucket: completed attempts (green) under failed ones
(red), scaled to the busiest bucket; the y-axis label is that maximum. The
markup holds only numbers and fixed words, so it needs no escaping.
"""

from __future__ import annotations

from collections.abc import Sequence

# The chart's size in CSS pixels: wide enough for 30 buckets of 1 minute.
WIDTH = 600
HEIGHT = 140
# Room for the axis labels.
LEFT = 44
BOTTOM = 18
FAILED_OUTCOMES = frozenset({"FAILED", "TIMED_OUT"})


def _bar(x: float, width: float, top: float, height: float, css: str, title: str) -> str:
    return (
        f'<rect class="{css}" x="{x:.1f}" y="{top:.1f}" width="{width:.1f}" '
        f'height="{height:.1f}"><title>{title}</title></rect>'
    )


def throughput_svg(buckets: Sequence[dict[str, int]], *, bucket_s: float) -> str:
    """An SVG of attempts ended per bucket (oldest first), completed and failed stacked.

    Args:
        buckets: ``{outcome: count}`` per bucket, as ``store.dashboard.throughput`` returns.
        bucket_s: each bucket's width in seconds (for the labels).
    """
    done = [b.get("COMPLETED", 0) for b in buckets]
    bad = [sum(n for o, n in b.items() if o in FAILED_OUTCOMES) for b in buckets]
    peak = max([d + f for d, f in zip(done, bad, strict=True)] + [1])
    plot_w, plot_h = WIDTH - LEFT, HEIGHT - BOTTOM
    step = plot_w / max(1, len(buckets))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="jobs ended per '
        f'{bucket_s:g} s">',
        f'<line class="axis" x1="{LEFT}" y1="{plot_h}" x2="{WIDTH}" y2="{plot_h}"/>',
        f'<text class="label" x="{LEFT - 6}" y="12" text-anchor="end">{peak}</text>',
        f'<text class="label" x="{LEFT - 6}" y="{plot_h}" text-anchor="end">0</text>',
    ]
    minutes = len(buckets) * bucket_s / 60
    parts.append(
        f'<text class="label" x="{LEFT}" y="{HEIGHT - 3}">{minutes:g} min ago</text>'
        f'<text class="label" x="{WIDTH}" y="{HEIGHT - 3}" text-anchor="end">now</text>'
    )
    for i, (d, f) in enumerate(zip(done, bad, strict=True)):
        x = LEFT + i * step + 1
        width = max(1.0, step - 2)
        done_h = plot_h * d / peak
        bad_h = plot_h * f / peak
        title = f"{d} completed, {f} failed"
        if d:
            parts.append(_bar(x, width, plot_h - done_h, done_h, "done", title))
        if f:
            parts.append(_bar(x, width, plot_h - done_h - bad_h, bad_h, "failed", title))
    parts.append("</svg>")
    return "".join(parts)
