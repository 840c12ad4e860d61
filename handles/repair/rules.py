"""Small rules shared by import, reconciliation and health checks: vendor suffixes, URL templates,
and when two URLs name the same page."""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import quote, urlsplit, urlunsplit

from django.core.exceptions import ValidationError

from handles.models import Prefix
from handles.validators import validate_target_url

TEMPLATE_FIELDS = ("external_id", "suffix", "prefix", "source_system")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
# Characters kept as they are when a value goes into a URL path: RFC 3986 pchar without '/', '?' and '#'.
_PATH_SAFE = "-._~!$&'()*+,;=:@"
_PLAIN = re.compile(r"[0-9A-Za-z._~-]*\Z")  # nothing to encode (ids such as 991011507293904641)


def vendor_matcher(prefix: Prefix) -> Callable[[str], bool]:
    """Whether a suffix comes from the vendor's sequence (Prefix.vendor_suffix_pattern, a regex).
    A pattern that does not compile flags nothing (vendor_pattern_error says why)."""
    pattern = (prefix.vendor_suffix_pattern or "").strip()
    if not pattern or vendor_pattern_error(pattern):
        return lambda suffix: False
    compiled = re.compile(pattern)
    return lambda suffix: compiled.search(suffix) is not None


def vendor_pattern_error(pattern: str) -> str:
    try:
        re.compile(pattern)
    except re.error as exc:
        return f"The vendor suffix pattern {pattern!r} is not a valid regular expression: {exc}."
    return ""


def template_error(template: str) -> str:
    """Why a URL template cannot be used, or '' if it can."""
    names = _PLACEHOLDER.findall(template)
    unknown = [n for n in names if n not in TEMPLATE_FIELDS]
    if unknown:
        return (f"The URL template uses {{{unknown[0]}}}; it may use "
                + ", ".join(f"{{{n}}}" for n in TEMPLATE_FIELDS) + ".")
    if template.count("{") != len(names) or template.count("}") != len(names):
        return "The URL template has an unbalanced '{' or '}'."
    try:
        validate_target_url(_PLACEHOLDER.sub("x", template))
    except ValidationError as exc:
        return "The URL template does not make a valid URL: " + " ".join(exc.messages)
    return ""


class MissingTemplateValue(ValueError):
    pass


def render_template(template: str, values: dict[str, str]) -> str:
    """Fill a checked template. Values are percent-encoded as URL path characters."""

    def fill(match: re.Match[str]) -> str:
        value = values.get(match.group(1), "")
        if not value:
            raise MissingTemplateValue(f"the URL template needs {{{match.group(1)}}}, which this row does not give")
        return value if _PLAIN.match(value) else quote(value, safe=_PATH_SAFE)

    return _PLACEHOLDER.sub(fill, template)


def normalize_url(url: str) -> str:
    """Compare URLs as a browser would land on them: scheme and host are case-insensitive, a default
    port and an empty path are nothing, the fragment never reaches the server."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return url.strip()
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if port and not ((scheme == "http" and port == 80) or (scheme == "https" and port == 443)):
        host = f"{host}:{port}"
    path = parts.path or "/"
    return urlunsplit((scheme, host, path, parts.query, ""))


def same_page(a: str, b: str) -> bool:
    if not a or not b:
        return False
    a, b = normalize_url(a), normalize_url(b)
    return a == b or a.rstrip("/") == b.rstrip("/")


def names_id(url: str, external_id: str) -> bool:
    """Whether a URL names an external id as a whole token (alma991011507293904641 names 991011507293904641;
    ...04641 inside a longer number does not)."""
    if not url or not external_id:
        return False
    pattern = (r"(?<![0-9])" if external_id[0].isdigit() else r"(?<![0-9A-Za-z])") + re.escape(external_id)
    pattern += r"(?![0-9])" if external_id[-1].isdigit() else r"(?![0-9A-Za-z])"
    return re.search(pattern, url) is not None
