"""How a handle is written inside a URL: the one place every citation and resolver link is built.

A suffix may hold any printable Unicode (docs/handle-server.md §1), including `?`, `#`, `%` and spaces, which end
or change a URL path when written raw: `https://hdl.handle.net/20.500.12345/a?b#c` resolves the handle
`20.500.12345/a`. The proxy resolver (and the Handle server) decode percent-escapes in the path, so each
character other than letters, digits, `-._~` and `/` is percent-encoded (UTF-8). The `/` inside a suffix
stays readable, except when the suffix has an empty, `.` or `..` segment, which browsers and HTTP clients
would collapse: then every `/` is written `%2F` as well.
"""

from __future__ import annotations

from urllib.parse import quote

from django.conf import settings


def handle_url_path(prefix: str, suffix: str) -> str:
    """`PREFIX/SUFFIX` as a URL path (no leading slash); unquote() of it gives the handle back."""
    keeps_slashes = all(segment not in ("", ".", "..") for segment in suffix.split("/"))
    return f"{quote(prefix, safe='')}/{quote(suffix, safe='/' if keeps_slashes else '')}"


def citation_url(prefix: str, suffix: str) -> str:
    """The URL to cite: the resolver (HANDLES_RESOLVER_BASE_URL) followed by the encoded handle."""
    return f"{settings.HANDLES_RESOLVER_BASE_URL}/{handle_url_path(prefix, suffix)}"
