"""The small rules: vendor suffixes, URL templates, when two URLs name the same page, the trend chart."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone
from hypothesis import given
from hypothesis import strategies as st

from handles import services as core
from handles.repair import rules
from handles.repair.models import HealthRun, JobState
from handles.repair.trend import trend_svg


def test_vendor_pattern_flags_the_vendor_sequence(grinnell_prefix):
    is_vendor = rules.vendor_matcher(grinnell_prefix)
    assert is_vendor("1742400039") and not is_vendor("99") and not is_vendor("32100")


def test_a_bad_vendor_pattern_is_refused_on_the_prefix(grinnell_prefix):
    grinnell_prefix.vendor_suffix_pattern = r"^(\d{10}"
    with pytest.raises(ValidationError, match="Not a valid regular expression"):
        core.prefix_save(prefix=grinnell_prefix)


@pytest.mark.parametrize(("template", "problem"), [
    ("https://x.example/{external_id}", ""),
    ("https://x.example/{mms}", "may use"),
    ("https://x.example/{external_id", "unbalanced"),
    ("javascript:alert({suffix})", "does not make a valid URL"),
    ("/relative/{suffix}", "does not make a valid URL"),
])
def test_template_errors(template, problem):
    assert (problem in rules.template_error(template)) if problem else rules.template_error(template) == ""


def test_template_values_are_percent_encoded():
    url = rules.render_template("https://x.example/{external_id}?s={suffix}",
                                {"external_id": "a b/c?d#e", "suffix": "ü"})
    assert url == "https://x.example/a%20b%2Fc%3Fd%23e?s=%C3%BC"
    with pytest.raises(rules.MissingTemplateValue, match=r"needs \{external_id\}"):
        rules.render_template("https://x.example/{external_id}", {})


@given(st.text(min_size=1, max_size=40))
def test_any_value_makes_a_valid_url_from_a_valid_template(value):
    from handles.validators import validate_target_url

    validate_target_url(rules.render_template("https://x.example/alma{external_id}/view", {"external_id": value}))


def test_same_page_and_names_id():
    assert rules.same_page("HTTPS://Example.org:443/a/", "https://example.org/a")
    assert rules.same_page("http://example.org", "http://example.org/")
    assert not rules.same_page("https://example.org/a", "https://example.org/b")
    assert not rules.same_page("", "")
    primo = "https://grinnell.primo.exlibrisgroup.com/discovery/fulldisplay/alma991011591572104641/01GCL_INST:GCL"
    assert rules.names_id(primo, "991011591572104641")
    assert not rules.names_id(primo, "991011591572804641")  # the Grinnell report's wrong object
    assert not rules.names_id(primo, "1591572104641")  # a tail of a longer number is not the id
    assert rules.names_id("https://dams.example/node/node-1001", "node-1001")
    assert not rules.names_id("https://dams.example/node/node-10011", "node-1001")


def test_trend_chart_is_inline_svg_with_a_point_per_check():
    assert "No finished health check yet" in trend_svg([])
    runs = [HealthRun(state=JobState.DONE, created_at=timezone.now(), finished_at=timezone.now(),
                      counts={"correct": c, "broken": 10 - c}) for c in (5, 9, 10)]
    svg = trend_svg(runs)
    assert svg.startswith("<svg") and svg.count("<circle") == 3 and "<script" not in svg
    assert "90.0% of 10 resolve correctly" in svg
