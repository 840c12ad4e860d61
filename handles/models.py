"""Prefixes, assets, handles and the request log.

Our database is what we intend; the Handle server is what the world resolves. Every change to a handle
is a HandleRequest (kept forever) that a background task pushes to the server and verifies.
Writes happen only in the services (handles/services/) and the outbox (handles/outbox/).
"""

from __future__ import annotations

import os
import re
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models
from django.db.models import F, Func, Q, Value
from django.db.models.functions import Left, Replace
from django.urls import reverse
from django.utils import timezone

from handles.citation import citation_url
from handles.handle_server.client import ServerConfig
from handles.validators import ascii_upper, validate_prefix, validate_suffix, validate_target_url

if TYPE_CHECKING:
    from django.db.backends.base.base import BaseDatabaseWrapper
    from django.db.backends.base.schema import BaseDatabaseSchemaEditor
    from django.db.backends.ddl_references import Statement
    from django.db.models.sql.compiler import SQLCompiler

SqlAndParams = tuple[str, list[str | int] | tuple[str | int, ...]]  # what an expression compiles to

UNAMBIGUOUS_ALPHABET = "23456789bcdfghjkmnpqrstvwxz"  # no 0/o, 1/l/i, no vowels (no accidental words)


class HashIndexOnPostgres(models.Index):
    """An equality-only hash index on PostgreSQL, a plain index elsewhere (SQLite in development).

    A btree refuses keys over ~2.7 kB, which a 2000-character URL with non-ASCII characters can exceed;
    a hash index takes values of any length, and reverse lookups by URL only ever ask for equality."""

    def create_sql(self, model: type[models.Model], schema_editor: BaseDatabaseSchemaEditor, using: str = "",
                   **kwargs: Any) -> Statement:
        if schema_editor.connection.vendor == "postgresql":
            using = " USING hash"
        return super().create_sql(model, schema_editor, using=using, **kwargs)


class Prefix(models.Model):
    class SuffixPolicy(models.TextChoices):
        RANDOM = "random", "Random opaque suffix"
        ASSET_ID = "asset_id", "The asset's external id (e.g. the DAMS node id)"
        GIVEN = "given", "Given by the caller"

    class AssetDeleteAction(models.TextChoices):
        TOMBSTONE = "tombstone", "Tombstone the handle (it keeps resolving, to a tombstone page)"
        DELETE = "delete", "Delete the handle on the server (our record stays)"

    class TLS(models.TextChoices):
        VERIFY = "verify", "Verify against the system's certificate authorities"
        PINNED = "pinned", "Trust exactly the pinned certificate (no hostname check)"
        INSECURE = "insecure", "Do not verify (test servers only)"

    prefix = models.CharField(max_length=64, unique=True, validators=[validate_prefix],
                              help_text="Such as 20.500.14725 or 11084.")
    site_name = models.CharField(max_length=200, help_text='Such as "Collections Portal" or "GeoData Portal".')
    is_default = models.BooleanField(default=False, help_text="Used when an API call names no prefix.")

    server_url = models.URLField(help_text="The Handle server's HTTPS base URL, e.g. https://hdl.example.edu:8000")
    auth_identity = models.CharField(
        max_length=255, help_text="Admin identity index:handle, e.g. 300:0.NA/20.500.14725 or 300:20.500.14725/ADMIN"
    )
    secret_env_var = models.CharField(
        max_length=100,
        validators=[RegexValidator(r"^[A-Z_][A-Z0-9_]*$", "Use an environment variable name such as HANDLE_SECRET.")],
        help_text="Name of the environment variable that holds the HS_SECKEY secret. The secret itself is "
        "never stored in the database.",
    )
    tls_mode = models.CharField(max_length=10, choices=TLS.choices, default=TLS.PINNED)
    pinned_certificate = models.TextField(
        blank=True, help_text="PEM of the server's serverCertificate.pem, when TLS mode is 'pinned'."
    )
    client_cert_path = models.CharField(max_length=500, blank=True,
                                        help_text="Optional: client certificate (HS_PUBKEY authentication).")
    client_key_path = models.CharField(max_length=500, blank=True)

    hs_admin_handle = models.CharField(max_length=255, help_text="HS_ADMIN written into new handles, e.g. 0.NA/20.500.14725")
    hs_admin_index = models.PositiveIntegerField(default=200)
    hs_admin_permissions = models.CharField(
        max_length=12, default="011111110011",
        validators=[RegexValidator(r"^[01]{12}$", "Twelve 0/1 characters, leftmost is 'list handles'.")],
    )

    suffix_policy = models.CharField(max_length=10, choices=SuffixPolicy.choices, default=SuffixPolicy.RANDOM)
    suffix_length = models.PositiveSmallIntegerField(default=8, help_text="Length of random suffixes.")
    suffix_alphabet = models.CharField(max_length=100, default=UNAMBIGUOUS_ALPHABET)
    asset_delete_action = models.CharField(max_length=10, choices=AssetDeleteAction.choices,
                                           default=AssetDeleteAction.TOMBSTONE)
    url_template = models.CharField(
        max_length=2000, blank=True,
        help_text="Optional target URL template for imports and repairs, e.g. "
        "https://grinnell.primo.exlibrisgroup.com/discovery/fulldisplay/alma{external_id}/01GCL_INST:GCL",
    )
    vendor_suffix_pattern = models.CharField(
        max_length=200, blank=True,
        help_text=r"Regular expression of suffixes minted by a vendor's sequence (e.g. ^\d{10}$); such handles "
        "are flagged on import and in reconciliation.",
    )

    # What the worker last learned about this prefix's server (dashboard).
    last_contact_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_contact_ok = models.BooleanField(null=True, editable=False)
    last_contact_error = models.TextField(blank=True, editable=False)
    # Set while the server refuses our credentials (401/402): the prefix's queue waits, attempts unspent,
    # until a probe authenticates (handles.outbox.pause: prefix_auth_failed / prefix_auth_recovered).
    auth_failing_since = models.DateTimeField(null=True, blank=True, editable=False)
    auth_error = models.TextField(blank=True, editable=False)
    auth_probes = models.PositiveIntegerField(default=0, editable=False, help_text="Failed probes since then.")
    auth_probe_at = models.DateTimeField(null=True, blank=True, editable=False, help_text="The next probe.")

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    # Not a column: set by the pages that show a failing prefix (how many queued requests wait for it).
    waiting: int

    class Meta:
        ordering = ["prefix"]
        verbose_name_plural = "prefixes"
        constraints = [
            models.UniqueConstraint(fields=["is_default"], condition=Q(is_default=True), name="one_default_prefix"),
        ]

    def __str__(self) -> str:
        return f"{self.prefix} ({self.site_name})"

    def clean(self) -> None:
        if self.tls_mode == self.TLS.PINNED and "BEGIN CERTIFICATE" not in self.pinned_certificate:
            raise ValidationError({"pinned_certificate": "Paste the server's certificate (PEM) to pin it."})
        alphabet = self.suffix_alphabet or ""
        if len(set(ascii_upper(alphabet))) != len(alphabet) or not re.fullmatch(r"[0-9a-z]+", alphabet):
            raise ValidationError({"suffix_alphabet": "Use distinct lower-case letters and digits (handles are "
                                                      "case-insensitive)."})
        if self.suffix_length < 4:
            raise ValidationError({"suffix_length": "Use at least 4 characters."})
        try:
            re.compile(self.vendor_suffix_pattern or "")
        except re.error as exc:
            raise ValidationError({"vendor_suffix_pattern": f"Not a valid regular expression: {exc}."}) from exc

    @property
    def auth_failing(self) -> bool:
        return self.auth_failing_since is not None

    @property
    def secret(self) -> str:
        return os.environ.get(self.secret_env_var, "")

    def server_config(self) -> ServerConfig:
        return ServerConfig(
            base_url=self.server_url,
            auth_identity=self.auth_identity,
            secret=self.secret,
            verify=self.tls_mode != self.TLS.INSECURE,
            pinned_certificate=self.pinned_certificate if self.tls_mode == self.TLS.PINNED else "",
            client_cert=self.client_cert_path,
            client_key=self.client_key_path,
            timeout=settings.HANDLES_SERVER_TIMEOUT,
        )


class Asset(models.Model):
    class State(models.TextChoices):
        PUBLISHED = "published", "Published"
        UNPUBLISHED = "unpublished", "Unpublished"
        DELETED = "deleted", "Deleted"

    source_system = models.CharField(
        max_length=64,
        validators=[RegexValidator(r"^[a-z0-9][a-z0-9_.-]*$", "Lower-case letters, digits, '.', '_' and '-'.")],
        help_text="Such as dams, archivesspace, alma, repository.",
    )
    external_id = models.CharField(max_length=255, help_text="The asset's id in its source system, e.g. the DAMS node id.")
    title = models.CharField(max_length=1000, blank=True)
    url = models.CharField(max_length=2000, blank=True, validators=[validate_target_url],
                           help_text="Where the asset lives; its handles resolve here.")
    state = models.CharField(max_length=12, choices=State.choices, default=State.PUBLISHED)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["source_system", "external_id"]
        constraints = [
            models.UniqueConstraint(fields=["source_system", "external_id"], name="unique_asset_per_source"),
        ]

    def __str__(self) -> str:
        return f"{self.source_system}:{self.external_id}" + (f" {self.title[:60]}" if self.title else "")


class HandleQuerySet(models.QuerySet):
    def live(self) -> HandleQuerySet:
        return self.exclude(status=Handle.Status.DELETED)

    def by_name(self, prefix: str, suffix: str) -> HandleQuerySet:
        """Case-insensitive for ASCII, as the Handle server compares."""
        return self.filter(prefix__prefix__iexact=prefix, suffix_key=ascii_upper(suffix))


class Handle(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending (not yet on the server)"
        ACTIVE = "active", "Active"
        TOMBSTONED = "tombstoned", "Tombstoned"
        DELETED = "deleted", "Deleted"

    IDENTIFIER_TYPE = "Handle"

    prefix = models.ForeignKey(Prefix, on_delete=models.PROTECT, related_name="handles")
    suffix = models.CharField(max_length=255, validators=[validate_suffix])
    # ASCII-upper-cased suffix: uniqueness and lookups are case-insensitive like the server's.
    suffix_key = models.CharField(max_length=255, editable=False)
    target_url = models.CharField(max_length=2000, validators=[validate_target_url])
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.PENDING, db_index=True)
    tombstone_reason = models.TextField(blank=True)
    successor_url = models.CharField(max_length=2000, blank=True, validators=[validate_target_url])
    tombstoned_at = models.DateTimeField(null=True, blank=True)
    deleted_at = models.DateTimeField(null=True, blank=True)
    asset = models.ForeignKey(Asset, on_delete=models.PROTECT, null=True, blank=True, related_name="handles")
    is_primary = models.BooleanField(
        default=False, help_text="The handle to cite for its asset, when the asset has several."
    )

    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
                                   related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)
    # Bumped by every change; synced_version is the last version pushed to the server and read back.
    version = models.PositiveIntegerField(default=1)
    synced_version = models.PositiveIntegerField(default=0)
    synced_at = models.DateTimeField(null=True, blank=True)

    objects = HandleQuerySet.as_manager()

    class Meta:
        ordering = ["prefix__prefix", "suffix_key"]
        constraints = [
            models.UniqueConstraint(fields=["prefix", "suffix_key"], name="unique_handle_per_prefix"),
        ]
        indexes = [
            models.Index(fields=["updated_at"], name="handle_updated_idx"),
            HashIndexOnPostgres(fields=["target_url"], name="handle_target_url_idx"),  # reverse lookup by URL
        ]

    def __str__(self) -> str:
        return self.full_handle

    @property
    def full_handle(self) -> str:
        return f"{self.prefix.prefix}/{self.suffix}"

    @property
    def exists_on_server(self) -> bool:
        """What we intend: every handle but a deleted one resolves."""
        return self.status != self.Status.DELETED

    @property
    def resolver_target(self) -> str:
        """The URL the server should hold: a tombstoned handle resolves to our tombstone page."""
        if self.status == self.Status.TOMBSTONED:
            return self.tombstone_url
        return self.target_url

    @property
    def tombstone_url(self) -> str:
        path = reverse("handles:tombstone", kwargs={"prefix": self.prefix.prefix, "suffix": self.suffix})
        return settings.HANDLES_PUBLIC_BASE_URL + path

    @property
    def resolver_url(self) -> str:
        """The URL to cite, the suffix percent-encoded (handles.citation)."""
        return citation_url(self.prefix.prefix, self.suffix)

    @property
    def in_sync(self) -> bool:
        return self.synced_version == self.version


class HandleRequestQuerySet(models.QuerySet):
    def unfinished(self) -> HandleRequestQuerySet:
        return self.filter(status__in=[HandleRequest.Status.QUEUED, HandleRequest.Status.RUNNING])

    def due(self, now: datetime | None = None) -> HandleRequestQuerySet:
        """Queued requests whose time has come, less those of prefixes whose authentication is failing
        (they wait for the prefix's probe). Paused prefixes are few: their ids are read first, so a queue
        with none pays no join."""
        now = now or timezone.now()
        due = self.filter(status=HandleRequest.Status.QUEUED).filter(
            Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)
        )
        paused = list(Prefix.objects.filter(auth_failing_since__isnull=False).values_list("pk", flat=True))
        return due.exclude(handle__prefix_id__in=paused) if paused else due

    def paused(self) -> HandleRequestQuerySet:
        """Queued requests waiting for their prefix's authentication to work again."""
        return self.filter(status=HandleRequest.Status.QUEUED, handle__prefix__auth_failing_since__isnull=False)

    def lease_expired(self, now: datetime | None = None) -> HandleRequestQuerySet:
        return self.filter(status=HandleRequest.Status.RUNNING, lease_until__lt=now or timezone.now())


class HandleRequest(models.Model):
    """One change asked of the Handle server, and what became of it. Kept forever: it is the history."""

    class Op(models.TextChoices):
        CREATE = "create", "create"
        UPDATE = "update", "update"
        DELETE = "delete", "delete"
        VERIFY = "verify", "verify"

    class Action(models.TextChoices):
        MINT = "mint", "Mint"
        REDIRECT = "redirect", "Redirect"
        TOMBSTONE = "tombstone", "Tombstone"
        RESTORE = "restore", "Restore"
        DELETE = "delete", "Delete"
        VERIFY = "verify", "Verify"
        REPAIR = "repair", "Repair"

    class Status(models.TextChoices):
        QUEUED = "queued", "queued"
        RUNNING = "running", "running"
        SUCCESS = "success", "success"
        ERROR = "error", "error"

    handle = models.ForeignKey(Handle, on_delete=models.PROTECT, related_name="requests")
    op = models.CharField(max_length=10, choices=Op.choices)
    action = models.CharField(max_length=12, choices=Action.choices)
    full_handle = models.CharField(max_length=330)
    url = models.CharField(max_length=2000, blank=True, help_text="The URL this request puts on the server.")
    from_url = models.CharField(max_length=2000, blank=True)
    from_status = models.CharField(max_length=12, blank=True)
    to_status = models.CharField(max_length=12, blank=True)
    reason = models.TextField(blank=True)
    handle_version = models.PositiveIntegerField(help_text="The handle's version this request was made for.")

    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    attempts = models.PositiveIntegerField(default=0)
    max_attempts = models.PositiveIntegerField(default=10, help_text="Attempts allowed before the request ends in error.")
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    enqueued_at = models.DateTimeField(null=True, blank=True)
    lease_token = models.UUIDField(null=True, blank=True, editable=False)
    lease_until = models.DateTimeField(null=True, blank=True)
    pushed_version = models.PositiveIntegerField(null=True, blank=True)

    # The API shows these as javastdout / java_stderr / error (shared/context/002, "Handle Metadata Structure").
    server_output = models.TextField(blank=True, help_text="What the Handle server answered, call by call.")
    server_error = models.TextField(blank=True, help_text="The server's error answer, if any.")
    error = models.TextField(blank=True)

    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
                                     related_name="+")
    requested_via = models.CharField(max_length=100, blank=True, help_text="admin, api:<token>, command, sweep ...")
    # An API client's Idempotency-Key: the same key from the same client returns the same request.
    idempotency_key = models.CharField(max_length=200, blank=True, db_index=True)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = HandleRequestQuerySet.as_manager()

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["handle", "id"], name="request_handle_order_idx"),
            models.Index(fields=["status", "next_attempt_at"], name="request_due_idx"),
            models.Index(fields=["created_at"], name="request_created_idx"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.op} {self.full_handle} ({self.status})"

    @property
    def finished(self) -> bool:
        return self.status in (self.Status.SUCCESS, self.Status.ERROR)


class ErrorSignature(Func):
    """An error message with what differs from handle to handle taken out (the handle's name, quoted
    values, URLs and attempt counts), so one outage is one group however many handles it hit."""

    output_field = HandleRequest._meta.get_field("error")

    def __init__(self) -> None:
        # Replace takes any expression for the text to replace; the stubs ask for a Value.
        super().__init__(Left(Replace(F("error"), F("full_handle"), Value("{handle}")), 400))  # type: ignore[arg-type]

    def as_sql(self, compiler: SQLCompiler, connection: BaseDatabaseWrapper, function: str | None = None,
               template: str | None = None, arg_joiner: str | None = None, **extra: Any) -> SqlAndParams:
        return compiler.compile(self.source_expressions[0])

    def as_postgresql(self, compiler: SQLCompiler, connection: BaseDatabaseWrapper, **extra: Any) -> SqlAndParams:
        sql, params = compiler.compile(self.source_expressions[0])
        sql = f"regexp_replace({sql}, %s, %s, 'g')"
        params = [*params, r"'[^']*'", "'…'"]
        sql = f"regexp_replace({sql}, %s, %s, 'g')"
        params = [*params, r"https?://[^\s'\"),]+", "<url>"]
        sql = f"regexp_replace({sql}, %s, %s, 'g')"
        params = [*params, r"after [0-9]+ attempts", "after N attempts"]
        return sql, params
