"""Check connection (handles.connection_check, its admin page and `manage.py check_handle_server`) against
the simulator: a working set-up passes every step; each planted failure fails its step, says what to
change, and marks the steps that depend on it "not run"."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse

from handles import services
from handles.connection_check import FAILED, NOT_RUN, OK, SCRATCH_STEM, WARNING, check_connection
from handles.handle_server.client import HandleServerClient
from handles.models import Prefix
from handles.simulator.certificates import ensure_certificate
from tests.conftest import SECRET_ENV, SIM_PREFIX
from tests.simulator_process import free_port

pytestmark = pytest.mark.django_db

WRONG_SECRET_ENV = "HANDLE_SECRET_TEST_WRONG"


def statuses(report) -> dict[str, str]:
    return {step.key: step.status for step in report.steps}


def scratch_left_on(prefix: Prefix) -> list[str]:
    client = HandleServerClient(prefix.server_config())
    try:
        return [h for h in client.iter_handles(SIM_PREFIX) if h.startswith(f"{SIM_PREFIX}/{SCRATCH_STEM}")]
    finally:
        client.close()


def changed(prefix: Prefix, **fields) -> Prefix:
    for name, value in fields.items():
        setattr(prefix, name, value)
    return services.prefix_save(prefix=prefix)


def test_a_working_setup_passes_every_step_and_leaves_no_scratch_handle(prefix):
    report = check_connection(prefix)
    assert statuses(report) == {step.key: OK for step in report.steps}
    assert report.ok
    assert report.scratch_handle.startswith(f"{SIM_PREFIX}/{SCRATCH_STEM}")
    assert "Authenticated as 300:20.500.12345/ADMIN" in report.step("credentials").detail
    assert scratch_left_on(prefix) == []


def test_wrong_secret_fails_at_credentials_and_names_the_variable(prefix, monkeypatch):
    monkeypatch.setenv(WRONG_SECRET_ENV, "not-the-secret")
    report = check_connection(changed(prefix, secret_env_var=WRONG_SECRET_ENV))
    steps = statuses(report)
    assert [steps[k] for k in ("https", "tls", "homed")] == [OK, OK, OK]
    assert steps["credentials"] == FAILED
    assert WRONG_SECRET_ENV in report.step("credentials").fix
    assert "Auth identity" in report.step("credentials").fix
    assert all(steps[k] == NOT_RUN for k in ("create", "read", "update", "delete", "listing", "hs_admin"))
    assert not report.ok


def test_unset_secret_fails_at_credentials_before_asking_the_server(prefix, monkeypatch):
    monkeypatch.delenv(WRONG_SECRET_ENV, raising=False)
    report = check_connection(changed(prefix, secret_env_var=WRONG_SECRET_ENV))
    assert report.step("credentials").status == FAILED
    assert "is empty or not set" in report.step("credentials").detail


def test_wrong_pin_fails_at_tls_and_says_what_to_paste(prefix, tmp_path):
    other_cert, _ = ensure_certificate(tmp_path)  # a certificate of another server
    report = check_connection(changed(prefix, pinned_certificate=other_cert.read_text()))
    steps = statuses(report)
    assert steps["https"] == OK and steps["tls"] == FAILED
    assert "the pin is SHA-256" in report.step("tls").detail
    assert "Pinned certificate" in report.step("tls").fix
    assert all(steps[k] == NOT_RUN for k in list(steps)[2:])


def test_verify_mode_against_a_self_signed_server_fails_at_tls(prefix):
    report = check_connection(changed(prefix, tls_mode=Prefix.TLS.VERIFY))
    assert report.step("tls").status == FAILED
    assert "'pinned'" in report.step("tls").fix


def test_insecure_mode_passes_with_a_warning(prefix):
    report = check_connection(changed(prefix, tls_mode=Prefix.TLS.INSECURE))
    assert report.step("tls").status == WARNING
    assert report.ok


def test_prefix_not_homed_fails_at_homed(prefix):
    elsewhere = services.prefix_save(prefix=Prefix(
        prefix="20.500.99999", site_name="Elsewhere", server_url=prefix.server_url, auth_identity=prefix.auth_identity,
        secret_env_var=SECRET_ENV, tls_mode=Prefix.TLS.PINNED, pinned_certificate=prefix.pinned_certificate,
        hs_admin_handle=prefix.hs_admin_handle, hs_admin_index=300))
    report = check_connection(elsewhere)
    steps = statuses(report)
    assert steps["homed"] == FAILED
    assert "does not live there" in report.step("homed").detail
    assert "Server URL" in report.step("homed").fix
    assert all(steps[k] == NOT_RUN for k in list(steps)[3:])


def test_listing_off_fails_only_the_listing_step(prefix, sim):
    sim.set_fault("nolist")
    report = check_connection(prefix)
    steps = statuses(report)
    assert steps["listing"] == FAILED
    assert "allow_list_hdls" in report.step("listing").fix
    assert all(status == OK for key, status in steps.items() if key != "listing")
    sim.clear_faults()
    assert scratch_left_on(prefix) == []


def test_nothing_listening_fails_at_https(prefix):
    report = check_connection(changed(prefix, server_url=f"https://127.0.0.1:{free_port()}"))
    steps = statuses(report)
    assert steps["https"] == FAILED
    assert "Server URL" in report.step("https").fix
    assert all(steps[k] == NOT_RUN for k in list(steps)[1:])


def test_hs_admin_without_the_permissions_the_queue_needs_fails(prefix):
    report = check_connection(changed(prefix, hs_admin_permissions="111110001101"))
    assert report.step("hs_admin").status == FAILED
    assert "modify value, delete handle" in report.step("hs_admin").detail
    assert "HS_ADMIN permissions" in report.step("hs_admin").fix


def test_hs_admin_naming_someone_else_fails(prefix):
    # The simulator lets every authenticated identity change any handle (as a server admin with full
    # access would); the check still says that the handles would not be ours to change elsewhere.
    report = check_connection(changed(prefix, hs_admin_handle=f"{SIM_PREFIX}/SOMEONE-ELSE"))
    assert [s.status for s in report.steps if s.key != "hs_admin"] == [OK] * 9
    assert report.step("hs_admin").status == FAILED
    assert "names neither our identity" in report.step("hs_admin").detail
    assert "HS_ADMIN handle" in report.step("hs_admin").fix


# --- The management command ------------------------------------------------------------------------
def test_command_exits_zero_when_all_steps_pass(prefix, capsys):
    call_command("check_handle_server", SIM_PREFIX)
    out = capsys.readouterr().out
    assert "10. [ok] The HS_ADMIN we write grants what we need" in out
    assert "All steps passed." in out


def test_command_fails_with_the_report_when_a_step_fails(prefix, capsys, monkeypatch):
    monkeypatch.setenv(WRONG_SECRET_ENV, "not-the-secret")
    changed(prefix, secret_env_var=WRONG_SECRET_ENV)
    with pytest.raises(CommandError) as failure:
        call_command("check_handle_server", SIM_PREFIX)
    assert failure.value.returncode == 1
    out = capsys.readouterr().out
    assert " 4. [FAILED] Our credentials authenticate" in out
    assert f"To fix: Check 'Auth identity' (300:20.500.12345/ADMIN) and the secret in the environment variable {WRONG_SECRET_ENV}" in out
    assert " 5. [not run] Create a scratch handle" in out


def test_command_names_the_configured_prefixes_for_an_unknown_one(prefix):
    with pytest.raises(CommandError, match=r"No prefix 20\.500\.1 here \(configured: 20\.500\.12345\)"):
        call_command("check_handle_server", "20.500.1")


# --- The admin page ------------------------------------------------------------------------------------
def test_prefix_page_links_to_check_connection(client, superuser, prefix):
    client.force_login(superuser)
    page = client.get(reverse("admin:handles_prefix_change", args=[prefix.pk]))
    assert reverse("admin:handles_prefix_check_connection", args=[prefix.pk]) in page.content.decode()


def test_staff_run_the_check_from_the_admin(staff_client, prefix):
    url = reverse("admin:handles_prefix_check_connection", args=[prefix.pk])
    page = staff_client.get(url)
    assert page.status_code == 200 and page.context["report"] is None  # GET only explains; POST runs it
    result = staff_client.post(url)
    assert result.status_code == 200
    assert result.context["report"].ok
    html = result.content.decode()
    assert "All steps passed." in html and html.count('class="hd-step-ok"') == 10


def test_the_admin_page_shows_the_failed_step_and_the_fix(staff_client, prefix, monkeypatch):
    monkeypatch.setenv(WRONG_SECRET_ENV, "not-the-secret")
    changed(prefix, secret_env_var=WRONG_SECRET_ENV)
    html = staff_client.post(reverse("admin:handles_prefix_check_connection", args=[prefix.pk])).content.decode()
    assert "The connection is not ready" in html
    assert 'class="hd-step-failed" data-step="credentials"' in html
    assert WRONG_SECRET_ENV in html
    assert html.count('class="hd-step-not-run"') == 6


def test_the_check_is_for_those_who_may_change_handles(client, manager_user, prefix):
    url = reverse("admin:handles_prefix_check_connection", args=[prefix.pk])
    answer = client.post(url)
    assert answer.status_code == 302 and "/login/" in answer["Location"]
    client.force_login(manager_user)  # staff who may only look
    assert client.post(url).status_code == 403
    page = client.get(reverse("admin:handles_prefix_change", args=[prefix.pk])).content.decode()
    assert "check-connection" not in page
