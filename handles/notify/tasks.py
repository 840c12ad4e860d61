"""django-q2 tasks of the notifications app (thin): send a delivery, the minute sweep, the watchdog."""

from __future__ import annotations

from django_q.tasks import async_task

from handles.labels import counted


def enqueue_delivery(delivery_id: int) -> None:
    async_task("handles.notify.tasks.deliver", delivery_id, group="notify", task_name=f"notify delivery {delivery_id}")


def deliver(delivery_id: int) -> str:
    """Send one delivery once. Safe to run twice: the claim admits one sender while it is due."""
    from handles.notify import delivery, services

    claimed = services.delivery_claim(delivery_id)
    if claimed is None:
        return "not due"
    result = delivery.send(claimed)
    return services.delivery_record(delivery_id, result).status


def notify_sweep() -> str:
    """Every minute (a django-q2 schedule): make the digests that are due, and hand due retries (and
    deliveries whose task was lost) to the queue again."""
    from handles.notify import services

    digests = services.digests_make()
    due = services.deliveries_due()
    for delivery_id in due:
        enqueue_delivery(delivery_id)
    return f"{counted(digests, 'digest')}, {counted(len(due), 'delivery', 'deliveries')} handed out"


def watchdog_all() -> str:
    """On the watchdog's schedule: one task per prefix, so a slow server holds up no other prefix."""
    from handles.models import Prefix
    from handles.notify import services

    pks = list(Prefix.objects.order_by("pk").values_list("pk", flat=True))
    for pk in pks:
        async_task("handles.notify.tasks.watch_prefix", pk, group="watchdog", task_name=f"watchdog prefix {pk}")
    pruned = services.watchdog_prune()
    return f"watching {counted(len(pks), 'prefix', 'prefixes')}; {counted(pruned, 'old run')} pruned"


def watch_prefix(prefix_id: int) -> str:
    from handles.notify import watchdog

    run = watchdog.watch(prefix_id)
    return f"{run.light}: {', '.join(run.failing) or 'all checks pass'}" if run else "no such prefix"
