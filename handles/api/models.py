"""API tokens: created by superusers in the admin, shown once, stored as a SHA-256 hash.

A token reads `hdl_<lookup>_<secret>`. The lookup part finds the row; only the secret's hash is kept, so
a copy of the database cannot be used to call the API.
"""

from __future__ import annotations

import hashlib
import hmac
import re

from django.conf import settings
from django.db import models
from django.utils import timezone

TOKEN_RE = re.compile(r"^hdl_(?P<lookup>[a-z0-9]{10})_(?P<secret>[A-Za-z0-9_-]{32,128})$")


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


class ApiTokenQuerySet(models.QuerySet):
    def active(self) -> ApiTokenQuerySet:
        return self.filter(revoked_at__isnull=True)


class ApiToken(models.Model):
    class Scope(models.TextChoices):
        READ = "read", "Read (lookups, lists, request status)"
        WRITE = "write", "Read and write (create, update, delete, asset lifecycle)"

    name = models.CharField(max_length=100, help_text="Who uses it, e.g. 'DAMS production' or 'ArchivesSpace'.")
    lookup = models.CharField(max_length=10, unique=True, editable=False)
    secret_hash = models.CharField(max_length=64, editable=False)
    scope = models.CharField(max_length=5, choices=Scope.choices, default=Scope.READ)
    prefixes = models.ManyToManyField(
        "handles.Prefix", blank=True, related_name="api_tokens",
        help_text="Restrict the token to these prefixes. Leave empty for every prefix.",
    )
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
                                   editable=False, related_name="+")
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    objects = ApiTokenQuerySet.as_manager()

    class Meta:
        ordering = ["name", "id"]
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.name} ({self.get_scope_display().split(' (')[0].lower()}, hdl_{self.lookup}_…)"

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    @property
    def can_write(self) -> bool:
        return self.scope == self.Scope.WRITE

    def secret_matches(self, secret: str) -> bool:
        return hmac.compare_digest(self.secret_hash, hash_secret(secret))
