"""Syntax rules for prefixes, suffixes and target URLs, shared by models, forms, the API and imports.

Handle syntax (docs/handle-server.md §1): a prefix is dot-separated segments, the suffix is any printable Unicode except that we refuse what would break
resolution or citation in practice (control characters, leading/trailing whitespace, over-long values).
"""

import re
import unicodedata
from urllib.parse import unquote, urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError

PREFIX_RE = re.compile(r"^[0-9A-Za-z]+(\.[0-9A-Za-z]+)*$")
RESOLVER_FORMS = re.compile(r"^(?:hdl:|https?://(?:hdl\.handle\.net|dx\.doi\.org|doi\.org)/)", re.IGNORECASE)


def ascii_upper(value: str) -> str:
    """Fold ASCII letters only, as the Handle server compares handles (é and É stay different)."""
    return value.translate(_ASCII_UPPER)


_ASCII_UPPER = {c: c - 32 for c in range(ord("a"), ord("z") + 1)}


def validate_prefix(value: str) -> None:
    if not isinstance(value, str) or not PREFIX_RE.match(value):
        raise ValidationError(
            "%(value)s is not a valid handle prefix: use digits and letters in dot-separated segments, "
            "such as 20.500.14725 or 11084.",
            code="invalid_prefix",
            params={"value": value},
        )
    if value.upper().startswith("0.NA"):
        raise ValidationError("Give the prefix itself (20.500.14725), not its prefix handle 0.NA/...", code="invalid_prefix")


def validate_suffix(value: str) -> None:
    if not isinstance(value, str) or value == "":
        raise ValidationError("The suffix is empty.", code="invalid_suffix")
    if value != value.strip():
        raise ValidationError("The suffix must not start or end with whitespace.", code="invalid_suffix")
    # Printable ASCII has none of these classes: most suffixes skip the per-character check.
    if not (value.isascii() and value.isprintable()) and any(
            unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn") for ch in value):
        raise ValidationError("The suffix contains control or unassigned characters.", code="invalid_suffix")
    if value.startswith("/") or value.endswith("/") or "//" in value:
        raise ValidationError("The suffix must not start or end with '/' or contain '//'.", code="invalid_suffix")
    if any(part in (".", "..") for part in value.split("/")):
        raise ValidationError("The suffix must not contain '.' or '..' path segments.", code="invalid_suffix")
    limit = settings.HANDLES_MAX_SUFFIX_BYTES
    if len(value.encode("utf-8")) > limit:
        raise ValidationError(
            "The suffix is longer than %(limit)d bytes.", code="suffix_too_long", params={"limit": limit}
        )


# What a new suffix may not hold: characters that end or change a URL path, or may not stand raw in one
# (RFC 3986 §2-3), and whitespace. Cited percent-encoded they resolve, but a citation copied or typed
# without the encoding breaks (`hdl.handle.net/20.500.12345/a?b#c` resolves `a`). Handles that already
# hold them (imported, adopted from the server) are kept and cited percent-encoded (handles.citation).
URL_BREAKING_CHARACTERS = '?#%"<>\\^`{|}'


def validate_new_suffix(value: str) -> None:
    """validate_suffix, and what a suffix minted here may not contain (mint page, API, asset publish)."""
    validate_suffix(value)
    found = sorted({ch for ch in value if ch in URL_BREAKING_CHARACTERS or ch.isspace()})
    if found:
        shown = ", ".join(dict.fromkeys(
            "a space" if ch == " " else "other whitespace" if ch.isspace() else f"'{ch}'" for ch in found))
        raise ValidationError(
            "A new handle's suffix must not contain spaces or any of ? # %% \" < > \\ ^ ` { | } (this one has "
            "%(found)s): a citation copied without percent-encoding would break. Use letters, digits and "
            "- . _ ~ / ( ) ; : and the like.",
            code="invalid_suffix", params={"found": shown},
        )


def validate_target_url(value: str) -> None:
    """Only absolute http(s) URLs: javascript:, data:, relative and credential-bearing URLs are refused."""
    if not isinstance(value, str) or not value:
        raise ValidationError("The URL is empty.", code="invalid_url")
    if len(value) > settings.HANDLES_MAX_URL_LENGTH:
        raise ValidationError(
            "The URL is longer than %(limit)d characters.",
            code="url_too_long",
            params={"limit": settings.HANDLES_MAX_URL_LENGTH},
        )
    if value.isascii():  # the usual case, without a per-character loop: ASCII's controls are not printable
        spaced = not value.isprintable() or " " in value
    else:
        spaced = any(ch.isspace() or unicodedata.category(ch) == "Cc" for ch in value)
    if spaced:
        raise ValidationError("The URL must not contain spaces or control characters.", code="invalid_url")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018  (raises ValueError on a malformed port)
    except ValueError as exc:
        raise ValidationError("The URL is malformed: %(error)s", code="invalid_url", params={"error": exc}) from exc
    if parts.scheme.lower() not in ("http", "https"):
        raise ValidationError("The URL must start with http:// or https://.", code="invalid_url")
    if not parts.hostname:
        raise ValidationError("The URL has no host name.", code="invalid_url")
    if parts.username or parts.password:
        raise ValidationError("The URL must not carry a user name or password.", code="invalid_url")


def split_handle(value: str) -> tuple[str, str]:
    """Split `PREFIX/SUFFIX`, also accepting the cited forms hdl:..., http(s)://hdl.handle.net/...

    The prefix is everything before the first '/'; the suffix may contain more '/' (docs/handle-server.md §1). A resolver
    URL's path is percent-decoded, as the resolver decodes it (handles.citation writes it encoded).
    """
    text = (value or "").strip()
    form = RESOLVER_FORMS.match(text)
    text = RESOLVER_FORMS.sub("", text)
    if form and form.group(0).lower().startswith("http"):
        text = unquote(text)
    prefix, sep, suffix = text.partition("/")
    if not sep or not prefix or not suffix:
        raise ValidationError(
            "%(value)s is not a handle: expected PREFIX/SUFFIX such as 20.500.14725/x7kq2m.",
            code="invalid_handle",
            params={"value": value},
        )
    validate_prefix(prefix)
    validate_suffix(suffix)
    return prefix, suffix
