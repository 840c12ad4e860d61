"""Configuration services (handles.services.configuration): prefixes saved from the admin."""

from __future__ import annotations

import pytest

from handles.models import Prefix
from handles.services import configuration
from tests.factories import PrefixFactory

pytestmark = pytest.mark.django_db


def test_only_one_default_prefix():
    offline_prefix = PrefixFactory()
    other = configuration.prefix_save(prefix=Prefix(
        prefix="11084", site_name="Legacy", is_default=True, server_url="https://h.example.edu:8000",
        auth_identity="300:0.NA/11084", secret_env_var="HS_11084", tls_mode=Prefix.TLS.VERIFY,
        hs_admin_handle="0.NA/11084"))
    offline_prefix.refresh_from_db()
    assert other.is_default and not offline_prefix.is_default
