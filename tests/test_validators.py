import pytest
from django.core.exceptions import ValidationError

from handles.validators import (
    ascii_upper,
    split_handle,
    validate_prefix,
    validate_suffix,
    validate_target_url,
)


@pytest.mark.parametrize("value", ["20.500.14725", "11084", "10.1045", "20.500.12345"])
def test_valid_prefixes(value):
    validate_prefix(value)


@pytest.mark.parametrize("value", ["", "20..500", "20.500/", " 20.500", "0.NA/20.500", "20.500.14725/x", "pré"])
def test_invalid_prefixes(value):
    with pytest.raises(ValidationError):
        validate_prefix(value)


@pytest.mark.parametrize("value", ["x7kq2m", "a/b", "café-1", "with space+plus", "1742400039", "A" * 255])
def test_valid_suffixes(value):
    validate_suffix(value)


@pytest.mark.parametrize("value", ["", " x", "x ", "/x", "x/", "a//b", "a/../b", "./a", "a\nb", "a\x00b", "é" * 200])
def test_invalid_suffixes(value):
    with pytest.raises(ValidationError):
        validate_suffix(value)


@pytest.mark.parametrize("value", ["https://example.org/a?b=c#d", "http://127.0.0.1:8000/x", "https://é.example/ü"])
def test_valid_urls(value):
    validate_target_url(value)


@pytest.mark.parametrize("value", [
    "javascript:alert(1)", "data:text/html,<script>", "/relative/path", "ftp://example.org/x", "https://",
    "https://user:pw@example.org/", "https://example.org/a b", " https://example.org", "https://example.org:99999/",
    "https://example.org/" + "a" * 2000, "", "mailto:x@example.org",
])
def test_refused_urls(value):
    with pytest.raises(ValidationError):
        validate_target_url(value)


@pytest.mark.parametrize(("cited", "expected"), [
    ("11084/99", ("11084", "99")),
    ("hdl:11084/99", ("11084", "99")),
    ("http://hdl.handle.net/11084/99", ("11084", "99")),
    ("https://hdl.handle.net/20.500.14725/a/b", ("20.500.14725", "a/b")),
    ("  20.500.14725/x7kq2m ", ("20.500.14725", "x7kq2m")),
])
def test_split_handle_accepts_cited_forms(cited, expected):
    assert split_handle(cited) == expected


@pytest.mark.parametrize("value", ["11084", "/99", "11084/", "not a handle", "https://example.org/11084/99"])
def test_split_handle_refuses_non_handles(value):
    with pytest.raises(ValidationError):
        split_handle(value)


def test_ascii_upper_folds_ascii_only():
    assert ascii_upper("café-été") == "CAFé-éTé"
