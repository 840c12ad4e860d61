"""The watchdog's checks one by one, against the simulator and the stand-in global proxy."""

from __future__ import annotations

import pytest

from handles import services as core
from handles.models import Prefix
from handles.notify import watchdog
from tests.conftest import SECRET_ENV

pytestmark = pytest.mark.django_db


def results(prefix: Prefix) -> dict[str, tuple[bool | None, str]]:
    return {r.check: (r.ok, r.detail) for r in watchdog.run_checks(prefix)}


@pytest.fixture
def registered(prefix, sim, global_proxy, notify_settings):
    global_proxy.register(prefix.prefix, "127.0.0.1", sim.port, forward_to=sim.base_url, cert=sim.cert_path)
    notify_settings.HANDLES_WATCHDOG_CHECKS = list(watchdog.CHECKS[:-1])  # `local` needs a live server
    return prefix


def test_all_pass_and_a_sample_resolves_through_the_proxy(registered, run_queue, unique_suffix, global_proxy):
    for n in range(2):
        run_queue(core.handle_mint, prefix=registered, suffix=unique_suffix("w"), target_url=f"https://w.org/{n}")
    got = results(registered)
    assert {name: ok for name, (ok, _) in got.items()} == {
        "server": True, "credentials": True, "homed": True, "registry": True, "global_resolution": True, "local": None}
    assert "2 sampled handles resolve" in got["global_resolution"][1]
    assert any("auth=true" in path and "type=URL" in path for path in global_proxy.requests)


def test_a_handle_that_resolves_elsewhere_through_the_proxy_fails_the_sample(registered, run_queue, unique_suffix):
    handle = run_queue(core.handle_mint, prefix=registered, suffix=unique_suffix("w"), target_url="https://w.org/a").handle
    type(handle).objects.filter(pk=handle.pk).update(target_url="https://w.org/we-meant-this")  # drift, unnoticed
    ok, detail = results(registered)["global_resolution"]
    assert ok is False and "resolves to https://w.org/a, not https://w.org/we-meant-this" in detail


def test_wrong_credentials_and_a_prefix_not_homed_there(registered, monkeypatch, sim):
    monkeypatch.setenv(SECRET_ENV, "wrong-secret")
    got = results(registered)
    assert got["server"][0] is True and got["credentials"][0] is False and got["homed"][0] is None
    monkeypatch.undo()
    stranger = core.prefix_save(prefix=Prefix(
        prefix="20.500.77777", site_name="Not homed", server_url=sim.base_url, auth_identity=registered.auth_identity,
        secret_env_var=SECRET_ENV, tls_mode=Prefix.TLS.PINNED, pinned_certificate=registered.pinned_certificate,
        hs_admin_handle="20.500.77777/ADMIN"))
    ok, detail = results(stranger)["homed"]
    assert ok is False and "0.NA/20.500.77777 is not among the prefixes homed on our server (0.NA/20.500.12345)" in detail


def test_an_unregistered_prefix_and_an_unreachable_proxy(registered, global_proxy, settings):
    global_proxy.records.clear()
    ok, detail = results(registered)["registry"]
    assert ok is False and "does not know 0.NA/20.500.12345" in detail
    settings.HANDLES_GLOBAL_PROXY_URL = "http://127.0.0.1:9"
    ok, detail = results(registered)["registry"]
    assert ok is None and "Not checked" in detail  # the registry's own outage raises no alarm of ours


def test_an_ipv4_mapped_address_and_the_port_are_compared(registered, global_proxy, sim):
    global_proxy.register(registered.prefix, "::ffff:127.0.0.1", sim.port)
    assert results(registered)["registry"][0] is True
    global_proxy.register(registered.prefix, "127.0.0.1", 8000)
    ok, detail = results(registered)["registry"]
    assert ok is False and f"names our address but not our port {sim.port}" in detail


def test_our_local_resolver_and_tombstone_page(prefix, live_server, settings, run_queue, unique_suffix):
    settings.HANDLES_PUBLIC_BASE_URL = live_server.url
    request = run_queue(core.handle_mint, prefix=prefix, suffix=unique_suffix("l"), target_url="https://l.org/1")
    run_queue(core.handle_tombstone, handle=request.handle, reason="withdrawn")
    run_queue(core.handle_mint, prefix=prefix, suffix=unique_suffix("l"), target_url="https://l.org/2")
    result = watchdog.check_local(prefix)
    assert result.ok is True and "The local resolver and the tombstone page answer" in result.detail
    settings.HANDLES_PUBLIC_BASE_URL = "http://127.0.0.1:9"
    result = watchdog.check_local(prefix)
    assert result.ok is False and "did not answer" in result.detail


def test_the_watchdog_command_prints_each_check_and_fails_when_one_fails(registered, capsys):
    from django.core.management import CommandError, call_command

    call_command("watchdog", registered.prefix)
    out = capsys.readouterr().out
    assert out.startswith(f"{registered.prefix}: green") and "[pass] the global registry sends the prefix" in out
    registered.secret_env_var = "HANDLE_SECRET_NOT_SET"
    registered.save()
    with pytest.raises(CommandError, match="^1 prefix failing.$"):
        call_command("watchdog")
    assert "[FAIL] our credentials authenticate" in capsys.readouterr().out
    with pytest.raises(CommandError, match="No such prefix: 1.2"):
        call_command("watchdog", "1.2")


def test_a_misspelt_check_name_is_a_startup_error(settings):
    from handles.notify.apps import check_watchdog_settings

    assert check_watchdog_settings() == []
    settings.HANDLES_WATCHDOG_CHECKS = ["server", "regsitry"]
    (error,) = check_watchdog_settings()
    assert error.id == "handles_notify.E001" and "regsitry" in error.msg
