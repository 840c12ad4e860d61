"""The health trend as an inline SVG line chart: no script, no CDN, readable without JavaScript."""

from __future__ import annotations

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from handles.repair.models import HealthOutcome, HealthRun

WIDTH, HEIGHT, PAD = 640, 180, 32


def _y(share: float) -> str:
    return f"{HEIGHT - PAD - share * (HEIGHT - 2 * PAD):.1f}"


def trend_svg(runs: list[HealthRun]) -> SafeString:
    """Share resolving correctly per finished health check, oldest left. Each point has a tooltip."""
    points = [(run, run.share_correct) for run in runs if run.share_correct is not None]
    if not points:
        return mark_safe('<p class="help">No finished health check yet: the trend appears after the first.</p>')
    step = (WIDTH - 2 * PAD) / max(1, len(points) - 1)
    xs = [f"{PAD + i * step:.1f}" for i in range(len(points))]
    line = " ".join(f"{x},{_y(share)}" for x, (_, share) in zip(xs, points, strict=True))
    dots = format_html_join(
        "", '<circle cx="{}" cy="{}" r="4"><title>{}: {} of {} resolve correctly</title></circle>',
        ((x, _y(share), _when(run), f"{share:.1%}", f"{sum(run.counts.get(k, 0) for k in HealthOutcome.values):,}")
         for x, (run, share) in zip(xs, points, strict=True)))
    grid = format_html_join(
        "", '<line x1="{}" x2="{}" y1="{}" y2="{}" class="grid"/><text x="4" y="{}">{}%</text>',
        ((PAD, WIDTH - PAD, _y(level), _y(level), f"{float(_y(level)) + 4:.1f}", int(level * 100))
         for level in (0, 0.25, 0.5, 0.75, 1)))
    return format_html(
        '<svg class="hd-trend" viewBox="0 0 {} {}" width="{}" height="{}" role="img" '
        'aria-label="Share of handles resolving correctly per health check">{}'
        '<polyline points="{}" fill="none" stroke="#417690" stroke-width="2"/>{}'
        '<text x="{}" y="{}">{}</text><text x="{}" y="{}" text-anchor="end">{}</text></svg>',
        WIDTH, HEIGHT, WIDTH, HEIGHT, grid, line, dots,
        PAD, HEIGHT - 8, _when(points[0][0])[:10], WIDTH - PAD, HEIGHT - 8, _when(points[-1][0])[:10])


def _when(run: HealthRun) -> str:
    return (run.finished_at or run.created_at).strftime("%Y-%m-%d %H:%M")
