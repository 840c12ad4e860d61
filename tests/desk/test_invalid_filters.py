"""Selections are exact: an invalid filter value is refused with the reason on every surface (/browse/ and
its CSV export: 400; the admin's lists: its invalid-lookup convention, ?e=1, with the reason as a message;
the failures page: 400, and nothing retried), never answered with the unfiltered list, export or retry.
The API's refusals are in tests/api/test_bad_input.py."""

from __future__ import annotations

import csv
import io

import pytest
from django.urls import reverse

from handles.desk.models import Collection
from handles.models import HandleRequest
from tests.factories import AssetFactory, HandleFactory, PrefixFactory

pytestmark = pytest.mark.django_db

# Each filter parameter with an invalid value, and the words of its refusal.
INVALID = [
    ({"collection": "999"}, "There is no collection with id '999'"),
    ({"collection": "maps"}, "There is no collection with id 'maps'"),
    ({"prefix": "999"}, "There is no prefix with id '999'"),
    ({"prefix": "20.500.12345"}, "There is no prefix with id '20.500.12345'"),
    ({"prefix": "²"}, "There is no prefix with id '²'"),  # a digit to str.isdigit(), not to int()
    ({"status": "bogus"}, "Unknown status 'bogus'"),
    ({"sync": "drifting"}, "Unknown sync state 'drifting'"),
    ({"health": "sick"}, "Unknown health check outcome 'sick'"),
    ({"source": "nowhere"}, "No asset comes from the source system 'nowhere'"),
    ({"q": "legacy1", "sort": "bogus"}, "Unknown sort order 'bogus'"),
    ({"q": "x" * 501}, "The search is longer than 500 characters"),
    ({"q": "legacy1\x00"}, "Contains a NUL character"),
    ({"stauts": "active"}, "Unknown parameter 'stauts'"),
]


@pytest.fixture
def listed():
    """Handles of which only some match any valid filter: a refusal must not show or export all of them."""
    prefix = PrefixFactory()
    asset = AssetFactory(source_system="dams")
    handles = [HandleFactory(prefix=prefix, suffix=f"legacy1-{i}", asset=asset) for i in range(2)]
    handles += [HandleFactory(prefix=prefix, suffix=f"other-{i}") for i in range(3)]
    Collection.objects.create(name="Maps", source_system="dams")
    return handles


@pytest.fixture
def manager_client(client, manager_user):
    client.force_login(manager_user)
    return client


@pytest.mark.parametrize(("params", "reason"), INVALID)
def test_browse_refuses_an_invalid_filter(manager_client, listed, params, reason):
    response = manager_client.get(reverse("desk:browse"), params)
    assert response.status_code == 400
    page = response.content.decode()
    assert "This filter was refused; no handle is listed." in page and reason in page.replace("&#x27;", "'")
    assert response.context["rows"] == [] and "legacy1-0" not in page


@pytest.mark.parametrize(("params", "reason"), INVALID)
def test_the_export_refuses_an_invalid_filter(manager_client, listed, params, reason):
    response = manager_client.get(reverse("desk:export"), params)
    assert response.status_code == 400 and response["Content-Type"].startswith("text/plain")
    body = response.content.decode()
    assert body.startswith("Nothing was exported: ") and reason in body


def test_the_export_refuses_a_cursor_it_would_not_honour(manager_client, listed):
    # The whole selection is exported: a page position in the query string is refused, not ignored.
    response = manager_client.get(reverse("desk:export"), {"q": "legacy1", "after": "WzFd"})
    assert response.status_code == 400 and "Unknown parameter 'after'" in response.content.decode()


def test_the_export_of_a_valid_filter_holds_only_the_matches(manager_client, listed):
    response = manager_client.get(reverse("desk:export"), {"q": "legacy1", "sort": "-created"})
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode()[1:])))
    assert sorted(row[0].split("/")[1] for row in rows[1:]) == ["legacy1-0", "legacy1-1"]


ADMIN_INVALID = [
    ({"collection": "999"}, "There is no collection with id '999'"),
    ({"collection": "maps"}, "There is no collection with id 'maps'"),
    ({"prefix": "20.500.12345"}, "There is no prefix with id '20.500.12345'"),
    ({"status": "bogus"}, "Unknown status 'bogus'"),
    ({"sync": "drifting"}, "Unknown sync state 'drifting'"),
    ({"source": "nowhere"}, "No asset comes from the source system 'nowhere'"),
    ({"q": "x" * 501}, "The search is longer than 500 characters"),
    ({"prefix": "²"}, "There is no prefix with id '²'"),
    ({"health": "sick"}, "Unknown health check outcome 'sick'"),
    ({"q": "legacy1\x00"}, "Contains a NUL character"),
]


@pytest.mark.parametrize(("params", "reason"), ADMIN_INVALID)
def test_the_admin_handle_list_refuses_an_invalid_filter(staff_client, listed, params, reason):
    url = reverse("admin:handles_handle_changelist")
    response = staff_client.get(url, params)
    assert response.status_code == 302 and response["Location"] == f"{url}?e=1"
    shown = staff_client.get(response["Location"]).content.decode().replace("&#x27;", "'")
    assert f"The list's filter was refused: {reason}" in shown


def test_an_invalid_filter_is_refused_even_where_the_filter_offers_no_choice(staff_client):
    HandleFactory(prefix=PrefixFactory(), suffix="alone")  # no collection, no asset source: those filters are hidden
    url = reverse("admin:handles_handle_changelist")
    for params in ({"collection": "999"}, {"source": "dams"}):
        response = staff_client.get(url, params)
        assert (response.status_code, response["Location"]) == (302, f"{url}?e=1")


@pytest.mark.parametrize(("params", "reason"), [
    ({"prefix": "999"}, "There is no prefix with id '999'"),
    ({"prefix": "x"}, "There is no prefix with id 'x'"),
    ({"prefix": "²"}, "There is no prefix with id '²'"),
    ({"since": "2026-13-01"}, "since: Enter a valid date."),
    ({"until": "yesterday"}, "until: Enter a valid date."),
])
def test_the_request_log_refuses_an_invalid_filter(staff_client, listed, params, reason):
    url = reverse("admin:handles_handlerequest_changelist")
    response = staff_client.get(url, params)
    assert (response.status_code, response["Location"]) == (302, f"{url}?e=1")
    assert reason in staff_client.get(response["Location"]).content.decode().replace("&#x27;", "'")


@pytest.mark.parametrize("params", [{"prefix": "999"}, {"since": "bogus"}, {"until": "2026-02-31"}])
def test_the_failures_page_refuses_an_invalid_filter_and_retries_nothing(staff_client, listed, params):
    failed = HandleRequest.objects.create(handle=listed[0], op="update", action="redirect", handle_version=1,
                                          full_handle=listed[0].full_handle, status="error", error="Server busy")
    response = staff_client.get(reverse("admin:handles_handlerequest_failures"), params)
    assert response.status_code == 400 and response.context["groups"] == []
    response = staff_client.post(reverse("admin:handles_handlerequest_retry_group"), params)
    assert response.status_code == 302
    failed.refresh_from_db()
    assert failed.status == "error" and failed.attempts == 0


def test_the_admin_list_links_its_filter_to_browse_and_export_without_its_own_parameters(staff_client, listed):
    page = staff_client.get(reverse("admin:handles_handle_changelist"), {"q": "legacy1", "o": "2", "status": "active"})
    expected = "?q=legacy1&amp;status=active"
    assert f'{reverse("desk:export")}{expected}"' in page.content.decode()
    assert f'{reverse("desk:browse")}{expected}"' in page.content.decode()
    assert staff_client.get(reverse("desk:browse") + "?q=legacy1&status=active").status_code == 200
