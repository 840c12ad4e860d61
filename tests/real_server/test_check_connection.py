"""Check connection against a real HANDLE.NET 9.3.1 server: a working set-up passes every step, and each
planted failure (wrong secret, wrong pin, prefix not homed, listing off) fails its step with what to change."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from handles import services
from handles.connection_check import FAILED, NOT_RUN, OK, SCRATCH_STEM, check_connection
from handles.handle_server.client import HandleServerClient
from handles.models import Prefix
from tests.real_server.conftest import WRONG_SECRET_ENV, make_prefix

pytestmark = [pytest.mark.real_server, pytest.mark.django_db]


@pytest.fixture
def real_prefix(db, clean_server) -> Prefix:
    """Secret-key login (the planted wrong secret is a secret-key failure), TLS pinned."""
    return make_prefix(clean_server, "secret key")


def statuses(report) -> dict[str, str]:
    return {step.key: step.status for step in report.steps}


def changed(prefix: Prefix, **fields) -> Prefix:
    for name, value in fields.items():
        setattr(prefix, name, value)
    return services.prefix_save(prefix=prefix)


def scratch_left(prefix: Prefix) -> list[str]:
    client = HandleServerClient(prefix.server_config())
    try:
        return [h for h in client.iter_handles(prefix.prefix) if SCRATCH_STEM in h]
    finally:
        client.close()


def test_a_working_setup_passes_every_step(real_prefix, capsys):
    report = check_connection(real_prefix)
    assert statuses(report) == {step.key: OK for step in report.steps}, [vars(s) for s in report.steps]
    assert "0.NA/20.500.12345" in report.step("credentials").detail
    assert scratch_left(real_prefix) == []
    call_command("check_handle_server", real_prefix.prefix)  # exit status 0
    assert "All steps passed." in capsys.readouterr().out


def test_wrong_secret(real_prefix, monkeypatch):
    monkeypatch.setenv(WRONG_SECRET_ENV, "not-the-secret")
    report = check_connection(changed(real_prefix, secret_env_var=WRONG_SECRET_ENV))
    steps = statuses(report)
    assert [steps[k] for k in ("https", "tls", "homed", "credentials")] == [OK, OK, OK, FAILED]
    assert "did not accept our credentials (HTTP 401)" in report.step("credentials").detail
    assert WRONG_SECRET_ENV in report.step("credentials").fix
    assert all(steps[k] == NOT_RUN for k in list(steps)[4:])
    with pytest.raises(CommandError):
        call_command("check_handle_server", real_prefix.prefix)


def test_wrong_pin(real_prefix, real_server):
    # The admin's client certificate: a valid certificate, not the server's.
    other = open(real_server.env["HANDLE_SERVER_CLIENT_CERT"]).read()
    report = check_connection(changed(real_prefix, pinned_certificate=other))
    steps = statuses(report)
    assert steps["https"] == OK and steps["tls"] == FAILED
    assert "Pinned certificate" in report.step("tls").fix
    assert all(steps[k] == NOT_RUN for k in list(steps)[2:])


def test_verify_mode_fails_on_the_self_signed_certificate(real_prefix):
    report = check_connection(changed(real_prefix, tls_mode=Prefix.TLS.VERIFY))
    assert report.step("tls").status == FAILED
    assert "'pinned'" in report.step("tls").fix


def test_prefix_not_homed(real_prefix):
    elsewhere = services.prefix_save(prefix=Prefix(
        prefix="20.500.99999", site_name="Not here", server_url=real_prefix.server_url,
        auth_identity=real_prefix.auth_identity, secret_env_var=real_prefix.secret_env_var,
        tls_mode=Prefix.TLS.PINNED, pinned_certificate=real_prefix.pinned_certificate,
        hs_admin_handle=real_prefix.hs_admin_handle, hs_admin_index=300))
    report = check_connection(elsewhere)
    steps = statuses(report)
    assert steps["homed"] == FAILED
    assert "That prefix doesn't live here" in report.step("homed").detail
    assert all(steps[k] == NOT_RUN for k in list(steps)[3:])


def test_listing_off(real_prefix, real_server):
    real_server.set_config("allow_list_hdls", "no")
    real_server.restart()
    try:
        report = check_connection(real_prefix)
    finally:
        real_server.set_config("allow_list_hdls", "yes")
        real_server.restart()
    steps = statuses(report)
    assert steps["listing"] == FAILED, vars(report.step("listing"))
    assert "does not support the list handles operation" in report.step("listing").detail
    assert "allow_list_hdls" in report.step("listing").fix
    assert all(status == OK for key, status in steps.items() if key != "listing")
    assert scratch_left(real_prefix) == []
