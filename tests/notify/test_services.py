"""Events, digests, deliveries and their retries, conditions and the hooks, against real parts: the
simulator for request errors and jobs, mail through the loopback SMTP server, webhooks to the receiver."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from handles import services as core
from handles import tasks as core_tasks
from handles.desk import services as desk_services
from handles.models import HandleRequest
from handles.notify import hooks, services, tasks
from handles.notify.forms import WebhookEndpointForm
from handles.notify.models import Condition, Delivery, Kind, Notification, Subscription, WebhookEndpoint
from handles.repair import services as repair_services
from tests.conftest import SECRET_ENV

pytestmark = pytest.mark.django_db


@pytest.fixture
def commit(django_capture_on_commit_callbacks):
    """Run a block as if its transaction committed: emitted events are recorded, deliveries sent inline."""

    def run(fn, *args, **kwargs):
        with django_capture_on_commit_callbacks(execute=True):
            return fn(*args, **kwargs)

    return run


@pytest.fixture
def endpoint(receiver, db):
    return services.endpoint_save(endpoint=WebhookEndpoint(name="Receiver", url=receiver.url, secret=receiver.secret,
                                                           kinds=[k for k in Kind.values if k != Kind.TEST]))


@pytest.fixture
def subscribed(staff_user, db):
    return services.subscription_save(subscription=Subscription(
        user=staff_user, kinds=[k for k in Kind.values if k != Kind.TEST], email="staff@library.example.edu"))


# --- emit ---------------------------------------------------------------------------------------------------
def test_an_event_is_recorded_only_when_the_callers_transaction_commits(commit, subscribed):
    def rolled_back():
        with pytest.raises(RuntimeError), transaction.atomic():
            services.emit(Kind.JOB, subject="never happened")
            raise RuntimeError

    commit(rolled_back)
    assert not Notification.objects.exists()
    commit(services.emit, Kind.JOB, subject="happened", details="d")
    assert Notification.objects.get().subject == "happened"


def test_emit_never_breaks_the_caller(commit, monkeypatch, caplog):
    def broken(*args):
        raise RuntimeError("database on fire")

    monkeypatch.setattr(services, "notification_record", broken)
    with caplog.at_level(logging.ERROR):
        commit(services.emit, Kind.JOB, subject="x")  # no exception reaches the caller
    assert "could not record the notification" in caplog.text


def test_a_dedupe_key_drops_a_repeat_within_the_window(commit, settings):
    for _ in range(3):
        commit(services.emit, Kind.JOB, subject="once", dedupe_key="job:7")
    assert Notification.objects.count() == 1
    Notification.objects.update(created_at=timezone.now() - timedelta(seconds=settings.HANDLES_NOTIFY_DEDUPE_SECONDS + 1))
    commit(services.emit, Kind.JOB, subject="again", dedupe_key="job:7")
    assert Notification.objects.count() == 2


def test_only_subscribers_of_the_kind_and_prefix_hear_of_it(commit, prefix, staff_user, superuser, notify_settings,
                                                             smtp):
    services.subscription_save(subscription=Subscription(user=staff_user, prefix=prefix, kinds=[Kind.DRIFT],
                                                         email="a@example.org"))
    services.subscription_save(subscription=Subscription(user=superuser, kinds=[Kind.JOB], email="b@example.org"))
    commit(services.emit, Kind.DRIFT, prefix=prefix, subject="drift here")
    commit(services.emit, Kind.DRIFT, subject="drift of no one prefix")  # only all-prefix subscribers
    commit(services.emit, Kind.JOB, prefix=prefix, subject="a job")
    assert sorted((m["To"], m["Subject"]) for m in smtp.wait_for(2)) == [
        ("a@example.org", "[handles] drift here"), ("b@example.org", "[handles] a job")]


# --- Digests of request errors --------------------------------------------------------------------------------
def test_request_errors_come_as_one_digest_per_interval(prefix, sim, run_queue, commit, subscribed, notify_settings,
                                                         smtp, unique_suffix, settings):
    settings.HANDLES_MAX_ATTEMPTS = 1
    sim.set_fault("503")
    for n in range(3):
        request = run_queue(core.handle_mint, prefix=prefix, suffix=unique_suffix("e"), target_url=f"https://e.org/{n}")
        assert request.status == HandleRequest.Status.ERROR
    waiting = Notification.objects.filter(kind=Kind.REQUEST_ERRORS, is_digest=False)
    assert waiting.count() == 3 and not Delivery.objects.exists()  # nothing is sent per request

    assert commit(services.digests_make) == 1
    (mail,) = smtp.wait_for(1)
    assert mail["Subject"] == f"[handles] 3 handle requests under {prefix.prefix} ended in error"
    body = mail.get_content()
    assert "Commonest error (3×)" in body and "Review and retry:" in body and unique_suffix.__name__ not in body

    run_queue(core.handle_mint, prefix=prefix, suffix=unique_suffix("e"), target_url="https://e.org/late")
    assert commit(services.digests_make) == 0  # this interval had its digest: the new error waits
    later = timezone.now() + timedelta(seconds=settings.HANDLES_NOTIFY_DIGEST_SECONDS + 1)
    assert commit(services.digests_make, now=later) == 1
    assert smtp.wait_for(2)[1]["Subject"] == f"[handles] 1 handle request under {prefix.prefix} ended in error"
    assert not waiting.filter(digest__isnull=True).exists()


# --- Deliveries: signature, template, retries, the log -----------------------------------------------------------
def test_a_webhook_is_signed_and_a_failed_one_retried_with_backoff_until_sent(commit, endpoint, receiver, settings):
    receiver.answers = [(503, "busy, try later")]
    commit(services.emit, Kind.JOB, subject="Import #4 ended incomplete", details="2 of 9 failed")
    delivery = Delivery.objects.get()
    assert delivery.status == Delivery.Status.PENDING and delivery.attempts == 1
    assert delivery.next_attempt_at > timezone.now() + timedelta(seconds=settings.HANDLES_NOTIFY_BACKOFF_BASE_SECONDS - 5)
    (attempt,) = delivery.log.all()
    assert (attempt.ok, attempt.status_code, attempt.response_excerpt) == (False, 503, "busy, try later")

    assert tasks.deliver(delivery.pk) == "not due"  # a duplicate task before the backoff sends nothing
    due = services.deliveries_due(now=delivery.next_attempt_at + timedelta(seconds=1))
    assert due == [delivery.pk]
    Delivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())
    assert tasks.deliver(delivery.pk) == "sent"
    assert [r.signature_ok for r in receiver.received] == [True, True]
    body = receiver.received[1].json()
    assert {k: body[k] for k in ("kind", "subject", "details", "prefix")} == {
        "kind": "job", "subject": "Import #4 ended incomplete", "details": "2 of 9 failed", "prefix": None}
    assert receiver.received[1].headers["X-Handles-Event"] == "job"
    assert [a.status_code for a in Delivery.objects.get().log.order_by("pk")] == [503, 200]


def test_a_delivery_gives_up_after_the_last_attempt_and_staff_send_it_again(commit, endpoint, receiver, settings):
    settings.HANDLES_NOTIFY_MAX_ATTEMPTS = 2
    endpoint.secret = "not-what-the-receiver-expects"
    endpoint.save()
    commit(services.emit, Kind.JOB, subject="x")
    delivery = Delivery.objects.get()
    Delivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())
    assert tasks.deliver(delivery.pk) == "failed"
    assert [(a.status_code, a.response_excerpt) for a in delivery.log.all()] == [(401, "bad signature")] * 2

    endpoint.secret = receiver.secret
    endpoint.save()
    assert commit(services.deliveries_retry, delivery_ids=[delivery.pk]) == 1
    assert Delivery.objects.get().status == Delivery.Status.SENT


def test_mail_that_cannot_be_handed_over_waits_for_a_retry(commit, subscribed, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", 9, 2  # nothing listens
    commit(services.emit, Kind.JOB, subject="x")
    delivery = Delivery.objects.get()
    assert delivery.status == Delivery.Status.PENDING and "ConnectionRefused" in delivery.last_error


def test_the_log_keeps_a_webhook_urls_token_out(commit, db):
    services.endpoint_save(endpoint=WebhookEndpoint(name="Slack", url="http://127.0.0.1:9/services/T0/B0/sekrit",
                                                    kinds=[Kind.JOB]))
    commit(services.emit, Kind.JOB, subject="x")
    delivery = Delivery.objects.get()
    assert delivery.recipient == "Slack (http://127.0.0.1:9/…)"
    assert "ConnectionError" in delivery.last_error and "sekrit" not in delivery.last_error
    assert "sekrit" not in delivery.log.get().error


def test_a_body_template_makes_a_chat_service_message(commit, endpoint, receiver):
    endpoint.body_template = '{"text": {{ text_json }}, "username": "handles"}'
    endpoint.save()
    commit(services.emit, Kind.DRIFT, subject='Drift "here"', details="3 × URL differs")
    (hook,) = receiver.received
    assert hook.signature_ok and hook.json() == {"text": 'Drift "here"\n3 × URL differs', "username": "handles"}


def test_a_template_that_does_not_make_json_is_refused():
    form = WebhookEndpointForm(data={"name": "Chat", "url": "https://chat.example.org/hook", "secret": "s",
                                     "kinds": ["drift"], "body_template": '{"text": {{ subject }}}', "active": True})
    assert not form.is_valid()
    assert "does not make valid JSON" in form.errors["body_template"][0]


# --- Conditions and the hooks ----------------------------------------------------------------------------------
def test_credentials_alarm_once_whoever_notices_first(commit, prefix, sim, monkeypatch, settings):
    settings.HANDLES_WATCHDOG_CHECKS = ["server", "credentials"]
    commit(hooks.prefix_auth_failed, prefix_id=prefix.pk, error="401 from the server")  # i12a's pause
    monkeypatch.setenv(SECRET_ENV, "wrong-secret")
    assert commit(tasks.watch_prefix, prefix.pk) == "red: credentials"
    assert list(Notification.objects.values_list("subject", flat=True)) == [
        f"The Handle server of {prefix.prefix} refuses our credentials"]
    monkeypatch.undo()
    commit(hooks.prefix_auth_recovered, prefix_id=prefix.pk)
    assert commit(tasks.watch_prefix, prefix.pk) == "green: all checks pass"
    assert Notification.objects.count() == 2
    assert not Condition.objects.get(key=f"server-auth:{prefix.pk}").failing


def test_a_job_that_ends_incomplete_notifies(prefix, sim, run_queue, commit, settings, unique_suffix,
                                              django_capture_on_commit_callbacks):
    handle = run_queue(core.handle_mint, prefix=prefix, suffix=unique_suffix("j"), target_url="https://j.org").handle
    settings.HANDLES_MAX_ATTEMPTS = 1
    with django_capture_on_commit_callbacks():
        job = desk_services.bulk_job_create(kind="verify", selection={"ids": [handle.pk]})
        assert desk_services.bulk_job_run_slice(job.pk) == "verifying"
    sim.set_fault("503")
    commit(core_tasks.push_request, HandleRequest.objects.get(requested_via=f"job:{job.pk}").pk)
    notification = Notification.objects.get(kind=Kind.JOB)
    assert notification.subject == f"{job} ended incomplete" and "1 of 1" in notification.details


def test_a_health_check_that_got_worse_notifies(commit):
    filters = {"prefix_ids": []}
    first = repair_services.health_start(filters=filters, enqueue=False)
    commit(repair_services.health_finish, first.pk, counts={"correct": 10})
    assert not Notification.objects.exists()  # nothing to compare with
    second = repair_services.health_start(filters=filters, enqueue=False)
    commit(repair_services.health_finish, second.pk, counts={"correct": 8, "broken": 1, "wrong_object": 1})
    notification = Notification.objects.get(kind=Kind.HEALTH)
    assert "fell from 100.0% to 80.0%" in notification.details
    assert "1 more broken handle" in notification.details and "1 more resolves to the wrong object" in \
        notification.details


def test_a_failed_reconciliation_notifies_as_a_failed_job(commit, prefix):
    run = repair_services.reconciliation_start(prefix=prefix, enqueue=False)
    commit(repair_services.reconciliation_finish, run.pk, counts={}, error="The server's listing failed")
    notification = Notification.objects.get()
    assert (notification.kind, notification.subject) == (Kind.JOB, f"Reconciliation of {prefix.prefix} failed")


def test_a_reconciliation_that_found_drift_notifies_each_kind_by_its_label(commit, prefix):
    run = repair_services.reconciliation_start(prefix=prefix, enqueue=False)
    commit(repair_services.reconciliation_finish, run.pk, counts={"missing": 2, "url_differs": 1, "in_sync": 7})
    notification = Notification.objects.get()
    assert (notification.kind, notification.occurrences) == (Kind.DRIFT, 3)
    assert notification.subject == f"Reconciliation found 3 drifting handles under {prefix.prefix}"
    assert notification.details.splitlines()[:2] == ["2 × Missing on the server", "1 × URL differs"]


def test_the_sweep_counts_in_words():
    assert tasks.notify_sweep() == "0 digests, 0 deliveries handed out"
