"""Waiting, in a command, until an import or repair has been verified on the server (--wait)."""

from __future__ import annotations

import time
from collections.abc import Callable

from django.core.management.base import BaseCommand, CommandError, CommandParser

from handles.jobs import Tally
from handles.repair.models import ImportBatch, RepairJob

Job = ImportBatch | RepairJob
TIMED_OUT = 2  # the exit status when --timeout ran out: the job goes on without the command


def add_wait_arguments(parser: CommandParser, what: str) -> None:
    parser.add_argument("--wait", action="store_true",
                        help=f"After queuing, wait until the worker has verified every {what} on the server, print "
                             "how many were verified and how many failed, and exit non-zero if any failed.")
    parser.add_argument("--timeout", type=float, default=3600, metavar="SECONDS",
                        help=f"With --wait: give up waiting after this long (default 3600; exit status {TIMED_OUT}).")


def wait_until_settled(command: BaseCommand, job: Job, *, reload: Callable[[int], Job],
                       settle: Callable[[int], Job], timeout: float, poll: float = 2.0) -> Job:
    """Poll the job until it leaves applying/verifying, settling it each time (the worker does too: a
    settle is idempotent). Prints the tally whenever it changes."""
    deadline = time.monotonic() + timeout
    shown: dict[str, int] | None = None
    while job.state in ("applying", "verifying"):
        if job.verification != shown and job.state == "verifying":
            shown = job.verification
            command.stdout.write(f"  {describe(job)}")
        if time.monotonic() >= deadline:
            raise CommandError(f"{job} is still {job.get_state_display().lower()} after {timeout:g} s: "
                               f"{describe(job)} The worker goes on; see it in the admin.", returncode=TIMED_OUT)
        time.sleep(min(poll, max(0.0, deadline - time.monotonic())))
        job = settle(job.pk) if job.state == "verifying" else reload(job.pk)
    return job


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
ENDED_WELL = ("done", "applied", "analysed")


def add_background_arguments(parser: CommandParser, what: str) -> None:
    parser.add_argument("--background", action="store_true",
                        help=f"Hand the {what} to the task queue, as the admin and the schedule do (a worker, "
                             "`manage.py qcluster`, runs it in slices), instead of running it here.")


def progress_line(job) -> str:
    state = job.get_state_display()
    done = f" {job.progress_done:,} of {job.progress_total:,}" if job.progress_total else ""
    return f"{state}:{done} {job.message}".rstrip()


def wait_for_job(command: BaseCommand, kind: str, job_id: int, *, timeout: float):
    """Wait until the worker ended the job (a verifying job is settled on the way), printing its progress.
    Gives up with exit status TIMED_OUT after `timeout`; a failed or cancelled job ends the wait at once."""
    from handles import jobs

    runner = jobs.runner(kind)
    job = jobs.wait(runner, job_id, timeout=timeout, on_change=lambda j: command.stdout.write(f"  {progress_line(j)}"))
    if job.state not in jobs.FINISHED_STATES:
        raise CommandError(f"{job} is still {job.get_state_display().lower()} after {timeout:g} s; the worker goes "
                           "on (see it in the admin).", returncode=TIMED_OUT)
    return job


def report_end(command: BaseCommand, job, *, ended_well: tuple[str, ...] = ENDED_WELL) -> None:
    """Print how the job ended with its counts; anything but done is a CommandError (exit status 1)."""
    counts = ", ".join(f"{k} {v:,}" for k, v in sorted(job.counts.items())) or "none"
    verified = f" {describe(job)}" if getattr(job, "verification", None) else ""
    if job.state not in ended_well:
        raise CommandError(f"{job}: {job.get_state_display()}. Counts: {counts}.{verified} {job.error}".rstrip())
    command.stdout.write(command.style.SUCCESS(f"{job}: {job.get_state_display()}. Counts: {counts}.{verified}"))
