"""Waiting, in a command, until an import or repair has been verified on the server (--wait)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from django.core.management.base import BaseCommand, CommandError, CommandParser

from handles.jobs import Job, Tally

J = TypeVar("J", bound=Job)  # the job waited for: an import, a repair, a reconciliation...
TIMED_OUT = 2  # the exit status when --timeout ran out: the job goes on without the command


def add_wait_arguments(parser: CommandParser, what: str) -> None:
    parser.add_argument("--wait", action="store_true",
                        help=f"After queuing, wait until the worker has verified every {what} on the server, print "
                             "how many were verified and how many failed, and exit non-zero if any failed.")
    parser.add_argument("--timeout", type=float, default=3600, metavar="SECONDS",
                        help=f"With --wait: give up waiting after this long (default 3600; exit status {TIMED_OUT}).")


def wait_until_settled(command: BaseCommand, job: J, *, reload: Callable[[int], J],
                       settle: Callable[[int], J], timeout: float, poll: float = 2.0,
                       task_name: str = "", since: datetime | None = None) -> J:
    """Poll the job until it ends (its apply, push and verification), settling it each time (the worker does too: a
    settle is idempotent). Prints the tally and the job's error whenever they change. `task_name`: the
    worker's task that moves the job on (an import's push); if it failed since `since`, waiting ends
    with its error (exit status 1), as it would never move the job on."""
    deadline = time.monotonic() + timeout
    shown: dict[str, int] | None = None
    error_shown = job.error
    while not job.finished:
        if job.verification != shown and job.state == "verifying":
            shown = job.verification
            command.stdout.write(f"  {describe(job)}")
        if job.error != error_shown:
            error_shown = job.error
            command.stdout.write(f"  {job.error}")
        if task_name and (failure := failed_task(task_name, since)):
            raise CommandError(f"{job}: the worker's task {task_name!r} failed: {failure} The job stays "
                               f"{job.get_state_display().lower()}; see it in the admin.")
        if time.monotonic() >= deadline:
            raise CommandError(f"{job} is still {job.get_state_display().lower()} after {timeout:g} s: "
                               f"{describe(job)} The worker goes on; see it in the admin.", returncode=TIMED_OUT)
        time.sleep(min(poll, max(0.0, deadline - time.monotonic())))
        job = settle(job.pk) if job.state == "verifying" else reload(job.pk)
    return job


def failed_task(name: str, since: datetime | None) -> str:
    """The last line of the error of the django-q2 task of this name that failed since `since` ('' if none).
    django-q2 keeps every failed task, whatever its save_limit."""
    from django_q.models import Failure

    failures = Failure.objects.filter(name=name)
    if since is not None:
        failures = failures.filter(started__gte=since)
    failure = failures.order_by("-stopped").first()
    if failure is None:
        return ""
    lines = [line for line in str(failure.result or "").strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no error was recorded."


def describe(job: Job) -> str:
    tally = Tally(**job.verification)
    text = f"verified on the server: {tally.success:,} of {tally.total:,}; failed: {tally.error:,}"
    if tally.unpushed:
        text += f"; not pushed (server unreadable): {tally.unpushed:,}"
    if tally.under_way:
        text += f"; still queued or running: {tally.under_way:,}"
    return text + "."


def report_settled(command: BaseCommand, job: Job) -> None:
    """Print the verified outcome; an incomplete or failed job is a CommandError (exit status 1)."""
    if job.state in ("incomplete", "failed"):
        raise CommandError(f"{job}: {job.get_state_display()}. " + (f"{describe(job)} " if job.verification else "")
                           + job.error)
    command.stdout.write(command.style.SUCCESS(f"{job}: {job.get_state_display()}; "
                                               + (describe(job) if job.verification else "nothing to verify.")))


# --- --background: through the queue and the worker, as the admin and the schedule start a job -----------
def ended_done(job: Job) -> bool:
    return job.state == "done"


def add_background_arguments(parser: CommandParser, what: str) -> None:
    parser.add_argument("--background", action="store_true",
                        help=f"Hand the {what} to the task queue, as the admin and the schedule do (a worker, "
                             "`manage.py qcluster`, runs it in slices), instead of running it here.")


def progress_line(job: Job) -> str:
    state = job.get_state_display()
    done = f" {job.progress_done:,} of {job.progress_total:,}" if job.progress_total else ""
    return f"{state}:{done} {job.message}".rstrip()


def wait_for_job(command: BaseCommand, kind: str, job_id: int, *, timeout: float) -> Any:
    """Wait until the worker ended the job (a verifying job is settled on the way), printing its progress.
    Gives up with exit status TIMED_OUT after `timeout`; a failed or cancelled job ends the wait at once."""
    from handles import jobs

    runner = jobs.runner(kind)
    job = jobs.wait(runner, job_id, timeout=timeout, on_change=lambda j: command.stdout.write(f"  {progress_line(j)}"))
    if job.state not in jobs.ENDED:
        raise CommandError(f"{job} is still {job.get_state_display().lower()} after {timeout:g} s; the worker goes "
                           "on (see it in the admin).", returncode=TIMED_OUT)
    return job


def report_end(command: BaseCommand, job: J, *, ended_well: Callable[[J], bool] = ended_done) -> None:
    """Print how the job ended with its counts; anything but done (`ended_well`: an import's apply must
    have applied) is a CommandError (exit status 1)."""
    counts = ", ".join(f"{k} {v:,}" for k, v in sorted(job.counts.items())) or "none"
    verified = f" {describe(job)}" if getattr(job, "verification", None) else ""
    if not ended_well(job):
        raise CommandError(f"{job}: {job.get_state_display()}. Counts: {counts}.{verified} {job.error}".rstrip())
    command.stdout.write(command.style.SUCCESS(f"{job}: {job.get_state_display()}. Counts: {counts}.{verified}"))
