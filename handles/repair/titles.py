"""How well a page's title names an object's title, and which other objects it may name instead: the
title check of resolution health (handles.repair.health)."""

from __future__ import annotations

import re
from difflib import SequenceMatcher

from django.db.models import Q

from handles.models import Asset

_NOT_WORD = re.compile(r"[\W_]+")
# Sites put their name beside the object's: "Letter Five | Grinnell College", "Grinnell College - Letter Five".
_SEPARATOR = re.compile(r"\s+[|:\u2013\u2014-]\s+|\s*\|\s*|\s+::\s+")
EXACT, CONTAINED = 1.0, 0.99  # the whole title as a segment of the page's; inside a segment, between words
NEAR_MISS = 0.8  # below this the page is plainly about something else
CANDIDATES = 200  # other assets scored against a page's title, at most


def _normal(text: str) -> str:
    return _NOT_WORD.sub(" ", text.casefold()).strip()


def _parts(page_title: str, site_name: str = "") -> list[str]:
    """The page's title and its segments, without the one that is only the site's name."""
    site = _normal(site_name)
    parts = [p.strip() for p in _SEPARATOR.split(page_title) if p.strip()]
    kept = [p for p in parts if not site or _normal(p) != site] or parts
    return list(dict.fromkeys([" | ".join(kept), *kept]))


def _segments(page_title: str, site_name: str = "") -> list[str]:
    return [n for n in dict.fromkeys(_normal(p) for p in _parts(page_title, site_name)) if n]


def title_score(page_title: str, asset_title: str, site_name: str = "") -> float:
    """How well a page's title names this title: 1 when a segment of it is exactly the title (the site's
    name aside), 0.99 when it contains it between words, else the closest segment's similarity (0..1)."""
    wanted = _normal(asset_title)
    segments = _segments(page_title, site_name)
    if not wanted or not segments:
        return 0.0
    if wanted in segments:
        return EXACT
    if any(f" {wanted} " in f" {segment} " for segment in segments):
        return CONTAINED
    return max(SequenceMatcher(None, segment, wanted).ratio() for segment in segments)


def titles_match(page_title: str, asset_title: str) -> bool:
    """The page names this title (not merely something like it)."""
    return title_score(page_title, asset_title) >= CONTAINED


def sibling_candidates(page_title: str, asset: Asset, site_name: str = "") -> list[tuple[Asset, float]]:
    """Other assets whose title the page's title names as well as or better than a near miss, best
    first (a longer title first among equals: it says more of the page): those whose title is a segment
    of the page's, and those sharing the longest segment's opening words (runs of near-identical titles:
    "Correspondence to Isabella, 1908, Letter One", "... Letter Two")."""
    raw = _parts(page_title, site_name)
    condition = Q()
    for part in raw:
        condition |= Q(title__iexact=part)
    longest = max(raw, key=len, default="")
    opening = longest[: max(12, len(longest) * 2 // 3)]
    if len(opening) >= 8:
        condition |= Q(title__istartswith=opening)
    if not condition:
        return []
    others = Asset.objects.filter(condition).exclude(pk=asset.pk).only("pk", "title", "source_system",
                                                                         "external_id")[:CANDIDATES]
    scored = [(other, title_score(page_title, other.title, site_name)) for other in others]
    return sorted((pair for pair in scored if pair[1] >= NEAR_MISS), key=lambda pair: (-pair[1], -len(pair[0].title)))
