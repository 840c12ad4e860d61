"""Configuration records saved from the admin: prefixes and assets.

(A prefix's authentication pause is the queue's state, kept by the outbox: `handles.outbox.pause`.)
"""

from __future__ import annotations

from django.db import transaction

from handles.models import Asset, Prefix


@transaction.atomic
def prefix_save(*, prefix: Prefix) -> Prefix:
    """Save a prefix (admin form). Only one prefix is the default."""
    prefix.full_clean()
    if prefix.is_default:
        Prefix.objects.exclude(pk=prefix.pk).filter(is_default=True).update(is_default=False)
    prefix.save()
    return prefix


@transaction.atomic
def asset_save(*, asset: Asset) -> Asset:
    asset.full_clean()
    asset.save()
    return asset

