"""Request services (handles.services.requests): staff retry a failed request."""

from __future__ import annotations

import pytest

from handles.exceptions import HandleStateError
from handles.models import HandleRequest
from handles.services import handles as handle_services
from handles.services import requests as request_services
from tests.factories import HandleFactory, PrefixFactory

pytestmark = pytest.mark.django_db


def test_retry_only_failed_requests_and_grants_new_attempts(staff_user):
    req = handle_services.handle_verify(handle=HandleFactory(prefix=PrefixFactory()))
    with pytest.raises(HandleStateError):
        request_services.request_retry(request=req)
    HandleRequest.objects.filter(pk=req.pk).update(status="error", attempts=10, max_attempts=10, error="boom")
    retried = request_services.request_retry(request=req, actor=staff_user)
    assert (retried.status, retried.attempts, retried.max_attempts) == ("queued", 10, 20)
    assert "retried by staff" in retried.server_output
