"""Shared fixtures: the Handle server simulator as a real process, a prefix that points at it, users."""

from __future__ import annotations

import os
import uuid

import pytest
from pytest_django.plugin import blocking_manager_key

from handles import services
from handles.models import HandleRequest, Prefix
from tests.factories import UserFactory
from tests.migration_data import reseed_migration_data, uses_transactional_db
from tests.simulator_process import SimulatorProcess

SIM_PREFIX = "20.500.12345"
SIM_SECRET = "test-secret-key-123"
SECRET_ENV = "HANDLE_SECRET_TEST"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item, nextitem):
    """After a transactional test emptied the database, restore what the migrations made."""
    yield
    if nextitem is not None and uses_transactional_db(item):
        with item.config.stash[blocking_manager_key].unblock():
            reseed_migration_data()


@pytest.fixture(scope="session")
def handle_server(tmp_path_factory):
    """The project's Handle server simulator on a free loopback port (real HTTPS), for the whole session."""
    os.environ[SECRET_ENV] = SIM_SECRET
    with SimulatorProcess(tmp_path_factory.mktemp("simulator"), prefixes=[SIM_PREFIX], secret=SIM_SECRET) as sim:
        yield sim


@pytest.fixture
def sim(handle_server):
    """The simulator with no fault switched on, and none left on after the test."""
    handle_server.clear_faults()
    yield handle_server
    handle_server.clear_faults()


@pytest.fixture
def prefix(db, sim) -> Prefix:
    return services.prefix_save(prefix=Prefix(
        prefix=SIM_PREFIX, site_name="Collections Portal", is_default=True, server_url=sim.base_url,
        auth_identity=f"300:{SIM_PREFIX}/ADMIN", secret_env_var=SECRET_ENV, tls_mode=Prefix.TLS.PINNED,
        pinned_certificate=sim.cert_path.read_text(), hs_admin_handle=f"{SIM_PREFIX}/ADMIN", hs_admin_index=300,
        hs_admin_permissions="111111111111",
    ))


@pytest.fixture
def unique_suffix():
    return lambda stem="t": f"{stem}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def staff_user(db):
    return UserFactory(username="staff", groups=["Handle staff"])


@pytest.fixture
def manager_user(db):
    return UserFactory(username="manager", groups=["Collection managers"])


@pytest.fixture
def superuser(db):
    return UserFactory(username="root", is_superuser=True)


@pytest.fixture
def staff_client(client, staff_user):
    client.force_login(staff_user)
    return client


@pytest.fixture
def run_queue(django_capture_on_commit_callbacks):
    """Run the enqueued tasks (inline, Q_CLUSTER sync) for everything a block commits."""

    def run(fn, *args, **kwargs):
        with django_capture_on_commit_callbacks(execute=True):
            result = fn(*args, **kwargs)
        if isinstance(result, HandleRequest):
            result.refresh_from_db()
        return result

    return run
