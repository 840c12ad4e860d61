"""Check connection: what a prefix needs from its Handle server, step by step, and where it breaks.

Each step says what it found and, when it fails, which field of the prefix (or which setting of the
server) to change. A failure that makes the later steps meaningless (nothing answers, wrong pin, wrong
credentials, ...) marks them "not run". The writes happen on a scratch handle of its own (a unique suffix
under SCRATCH_STEM) that is deleted again: it is not one of our handles, so it goes straight through the
client, not through the request queue, and it is never recorded in our database.

The admin's "Check connection" page and `manage.py check_handle_server PREFIX` show this report.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.utils import timezone

from handles.handle_server import records
from handles.handle_server.client import (
    AuthenticationFailed,
    HandleNotFound,
    HandleServerClient,
    HandleServerError,
    InvalidRequest,
    PermissionDenied,
    server_certificate,
    url_of,
)
from handles.models import Prefix

SCRATCH_STEM = "HANDLES-CHECK-CONNECTION-"  # scratch handles only; a leftover one is safe to delete
# HS_ADMIN permission positions (1-based, left to right: docs/handle-server.md §5) the queue's pushes need.
NEEDED_PERMISSIONS = {6: "add value", 8: "modify value", 11: "delete handle"}
RC_NOT_HOMED = 301
RC_NOT_SUPPORTED = 5

OK, WARNING, FAILED, NOT_RUN = "ok", "warning", "failed", "not run"

STEPS = [
    ("https", "The server answers over HTTPS"),
    ("tls", "The TLS certificate is trusted"),
    ("homed", "The prefix is homed on this server"),
    ("credentials", "Our credentials authenticate"),
    ("create", "Create a scratch handle"),
    ("read", "Read it back"),
    ("update", "Update its URL"),
    ("delete", "Delete it (then it is gone)"),
    ("listing", "Listing the prefix's handles is allowed"),
    ("hs_admin", "The HS_ADMIN we write grants what we need"),
]


@dataclass
class Step:
    key: str
    title: str
    status: str = NOT_RUN
    detail: str = ""
    fix: str = ""  # what to change, when it failed


@dataclass
class Report:
    prefix: str
    server_url: str
    scratch_handle: str
    steps: list[Step] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every step ran and none failed (a warning, e.g. TLS not verified on a test server, passes)."""
        return all(step.status in (OK, WARNING) for step in self.steps)

    @property
    def failed_count(self) -> int:
        return sum(step.status == FAILED for step in self.steps)

    def step(self, key: str) -> Step:
        return next(step for step in self.steps if step.key == key)


class _Fatal(Exception):
    """The step failed in a way that makes the steps after it meaningless."""


def check_connection(prefix: Prefix, *, client_factory: Callable[[Any], HandleServerClient] = HandleServerClient,
                     ) -> Report:
    """Run every step against the prefix's server with a fresh client (nothing cached from the queue)."""
    stamp = timezone.now().strftime("%Y%m%dT%H%M%S")
    scratch = f"{prefix.prefix}/{SCRATCH_STEM}{stamp}-{secrets.token_hex(4).upper()}"
    report = Report(prefix.prefix, prefix.server_url, scratch, [Step(key, title) for key, title in STEPS])
    client = client_factory(prefix.server_config())
    try:
        _Run(prefix, report, client).run()
    finally:
        client.close()
    return report


class _Run:
    def __init__(self, prefix: Prefix, report: Report, client: HandleServerClient) -> None:
        self.prefix = prefix
        self.report = report
        self.client = client
        self.scratch = report.scratch_handle
        self.base = settings.HANDLES_PUBLIC_BASE_URL
        self.created = False
        self.admin_found: dict[str, Any] | None = None  # the HS_ADMIN the server holds for the scratch handle

    def run(self) -> None:
        try:
            for key in ("https", "tls", "homed", "credentials"):
                self._do(key, getattr(self, f"_{key}"), fatal=True)
            writes_ok = self._do("create", self._create, fatal=False)
            if writes_ok:
                writes_ok = self._do("read", self._read, fatal=False)
            if writes_ok:
                self._do("update", self._update, fatal=False)
            if self.created:  # always clean up what we made, whatever failed in between
                self._do("delete", self._delete, fatal=False)
            self._do("listing", self._listing, fatal=False)
            self._do("hs_admin", self._hs_admin, fatal=False)
        except _Fatal:
            pass

    def _do(self, key: str, action: Callable[[Step], None], *, fatal: bool) -> bool:
        step = self.report.step(key)
        step.status = OK
        try:
            action(step)
        except HandleServerError as exc:
            step.status = FAILED
            step.detail = step.detail or str(exc)
            step.fix = step.fix or self._fix_for(exc)
        if step.status == FAILED and fatal:
            raise _Fatal
        return step.status != FAILED

    def _fail(self, step: Step, detail: str, fix: str) -> None:
        step.status, step.detail, step.fix = FAILED, detail, fix

    def _fix_for(self, exc: HandleServerError) -> str:
        if isinstance(exc, AuthenticationFailed):
            return self._credentials_fix()
        if isinstance(exc, PermissionDenied):
            return (f"The server refused {self.prefix.auth_identity} permission: make it a server admin "
                    f"(server_admins in the server's config.dct) or grant it in 0.NA/{self.prefix.prefix}'s HS_ADMIN.")
        if exc.transient:
            return "The server did not answer in time or is busy: check that it runs, then check again."
        return "See the server's answer above."

    def _credentials_fix(self) -> str:
        if self.prefix.client_cert_path:
            return (f"Check 'Auth identity' ({self.prefix.auth_identity}) and the client certificate and key "
                    "('Client cert path', 'Client key path'): the certificate must be the public key at that "
                    "index of that handle (HS_PUBKEY).")
        return (f"Check 'Auth identity' ({self.prefix.auth_identity}) and the secret in the environment variable "
                f"{self.prefix.secret_env_var} ('Secret env var'): it must be the HS_SECKEY at that index of "
                "that handle.")

    # --- Steps ------------------------------------------------------------------------------------------
    def _https(self, step: Step) -> None:
        if not self.prefix.server_url.lower().startswith("https://"):
            return self._fail(step, f"{self.prefix.server_url} is not an https:// URL.",
                              "Set 'Server URL' to the server's https:// address (writes and listing need HTTPS).")
        try:
            self.pem = server_certificate(self.prefix.server_url, self.prefix.server_config().timeout)
        except (OSError, ValueError) as exc:
            return self._fail(step, f"No TLS answer from {self.prefix.server_url}: {exc}",
                              "Check 'Server URL' (host and the server's HTTP port, e.g. 8000), that the Handle "
                              "server runs, and that no firewall is in the way.")
        step.detail = f"{self.prefix.server_url} presents a certificate ({_fingerprint(self.pem)})."

    def _tls(self, step: Step) -> None:
        mode = self.prefix.tls_mode
        if mode == Prefix.TLS.PINNED:
            try:
                pinned = _der(self.prefix.pinned_certificate)
            except ValueError:
                return self._fail(step, "The pinned certificate is not a PEM certificate.",
                                  "Paste the server's serverCertificate.pem into 'Pinned certificate'.")
            if pinned != _der(self.pem):
                return self._fail(
                    step, f"The server presents {_fingerprint(self.pem)}; the pin is "
                          f"{_fingerprint(self.prefix.pinned_certificate)}.",
                    "Paste the certificate the server presents now (its svr/serverCertificate.pem) into "
                    "'Pinned certificate' - or, if the server's certificate should not have changed, find out why.")
            step.detail = "Pinned: the server presents exactly the pinned certificate."
        elif mode == Prefix.TLS.INSECURE:
            step.status = WARNING
            step.detail = "Not verified (TLS mode 'insecure'): anyone in between could pose as the server."
            step.fix = "For a real server set 'TLS mode' to 'pinned' and paste its serverCertificate.pem."
        else:
            step.detail = "The certificate verifies against the system's certificate authorities."
        try:  # through the client, as the queue talks: any Handle answer means TLS worked
            self.client.get_handle(self.scratch, indexes=[1])
        except HandleNotFound:
            pass
        except InvalidRequest as exc:
            if exc.status is None:  # no HTTP answer: the TLS handshake failed
                fix = ("The certificate does not verify against the system's certificate authorities (a Handle "
                       "server's own certificate is self-signed): set 'TLS mode' to 'pinned' and paste its "
                       "serverCertificate.pem." if mode == Prefix.TLS.VERIFY else "See the error.")
                return self._fail(step, str(exc), fix)

    def _homed(self, step: Step) -> None:
        try:
            self.client.get_handle(self.scratch, indexes=[1])
        except HandleNotFound:
            step.detail = f"The server answers for {self.prefix.prefix} ({self.scratch} not found, as expected)."
            return None
        except InvalidRequest as exc:
            if exc.response_code == RC_NOT_HOMED:
                return self._fail(
                    step, f"The server says {self.prefix.prefix} does not live there ({exc}).",
                    f"Point 'Server URL' at the server that holds {self.prefix.prefix} (its primary site in "
                    f"0.NA/{self.prefix.prefix}'s HS_SITE), or home the prefix on this server (hdl-admintool: "
                    "Home/Unhome Prefix).")
            raise
        self._fail(step, f"{self.scratch} exists already; it should not.", "Delete that scratch handle, then check again.")

    def _credentials(self, step: Step) -> None:
        if self.prefix.client_cert_path:
            for path in filter(None, [self.prefix.client_cert_path, self.prefix.client_key_path]):
                if not os.access(path, os.R_OK):
                    return self._fail(step, f"{path} cannot be read by this process.",
                                      "Fix 'Client cert path' / 'Client key path' or the file's permissions.")
        elif not self.prefix.secret:
            return self._fail(step, f"The environment variable {self.prefix.secret_env_var} is empty or not set "
                              "in this process.",
                              f"Set {self.prefix.secret_env_var} for the web server and the workers (or fix "
                              "'Secret env var').")
        try:
            homed = self.client.list_prefixes()
        except PermissionDenied:
            step.detail = (f"Authenticated as {self.prefix.auth_identity} (not allowed to list the server's "
                           "prefixes, which is fine).")
            return None
        step.detail = f"Authenticated as {self.prefix.auth_identity}. The server homes: {', '.join(homed) or 'none'}."
        if f"0.NA/{self.prefix.prefix}".upper() not in {p.upper() for p in homed}:
            self._fail(self.report.step("homed"), f"The server's /api/prefixes does not list 0.NA/{self.prefix.prefix}.",
                       f"Home {self.prefix.prefix} on this server, or point 'Server URL' at the server that holds it.")
            raise _Fatal

    def _create(self, step: Step) -> None:
        url = f"{self.base}/check-connection/1"
        values = records.new_record(url, admin_handle=self.prefix.hs_admin_handle,
                                    admin_index=self.prefix.hs_admin_index, permissions=self.prefix.hs_admin_permissions)
        try:
            self.client.create_handle(self.scratch, values)
        except PermissionDenied:
            return self._fail(step, f"The server refused {self.prefix.auth_identity} creating {self.scratch}.",
                              f"Give {self.prefix.auth_identity} 'add handle' in 0.NA/{self.prefix.prefix}'s HS_ADMIN "
                              "(or make it a server admin), or fix 'Auth identity'.")
        except InvalidRequest as exc:
            return self._fail(step, f"The server refused the new record: {exc}",
                              "Check 'HS_ADMIN handle', 'HS_ADMIN index' and 'HS_ADMIN permissions'.")
        self.created = True
        step.detail = f"Created {self.scratch} (overwrite=false) with HS_ADMIN {self._admin_written()}."

    def _read(self, step: Step) -> None:
        expected = f"{self.base}/check-connection/1"
        answer = self.client.get_handle(self.scratch, authenticated=True)
        found = url_of(answer.body)
        if found != expected:
            return self._fail(step, f"The server resolves {self.scratch} to {found!r}, not {expected!r}.",
                              "The server did not keep what it accepted: ask its operator.")
        admins = [v for v in (answer.body or {}).get("values", []) if v.get("type") == "HS_ADMIN"]
        self.admin_found = admins[0]["data"].get("value") if admins and isinstance(admins[0].get("data"), dict) else None
        step.detail = f"It resolves to {found}."

    def _update(self, step: Step) -> None:
        expected = f"{self.base}/check-connection/2"
        self.client.update_values(self.scratch, [records.url_value(expected)])
        found, _ = self.client.get_url(self.scratch)
        if found != expected:
            return self._fail(step, f"After the update the server resolves to {found!r}, not {expected!r}.",
                              "The server did not keep the update: ask its operator.")
        step.detail = f"Redirected to {expected} and read back."

    def _delete(self, step: Step) -> None:
        self.client.delete_handle(self.scratch)
        try:
            self.client.get_handle(self.scratch, indexes=[1])
        except HandleNotFound:
            step.detail = f"Deleted; the server no longer has {self.scratch}."
            return None
        self._fail(step, f"{self.scratch} is still on the server after DELETE.",
                   "Delete it with hdl-admintool and ask the server's operator why it stayed.")

    def _listing(self, step: Step) -> None:
        try:
            total = self.client.count_handles(self.prefix.prefix)
        except InvalidRequest as exc:
            if exc.response_code == RC_NOT_SUPPORTED or exc.status == 501:
                return self._fail(step, f"The server does not allow listing handles ({exc}).",
                                  "Reconciliation and the remote-handles page need it: the server's operator sets "
                                  '"allow_list_hdls" = "yes" in server_config of config.dct and restarts the server.')
            raise
        except PermissionDenied as exc:
            return self._fail(step, f"{self.prefix.auth_identity} may not list handles: {exc}",
                              f"Give {self.prefix.auth_identity} 'list handles' (the leftmost HS_ADMIN bit) in "
                              f"0.NA/{self.prefix.prefix}'s HS_ADMIN, or make it a server admin.")
        step.detail = f"The server lists {total:,} handles under {self.prefix.prefix}."

    def _hs_admin(self, step: Step) -> None:
        bits = self.prefix.hs_admin_permissions
        missing = [name for position, name in NEEDED_PERMISSIONS.items()
                   if len(bits) < position or bits[position - 1] != "1"]
        if missing:
            return self._fail(step, f"HS_ADMIN permissions {bits} lack {', '.join(missing)}: the queue could not "
                              "redirect, tombstone or delete the handles it creates.",
                              "Set 'HS_ADMIN permissions' to 011111110011 (everything but listing and derived "
                              "prefixes) or 111111111111.")
        written = {"handle": self.prefix.hs_admin_handle, "index": self.prefix.hs_admin_index, "permissions": bits}
        if self.admin_found is not None and _admin_key(self.admin_found) != _admin_key(written):
            return self._fail(step, f"We wrote HS_ADMIN {self._admin_written()}; the server holds {self.admin_found}.",
                              "Ask the server's operator: it changed the HS_ADMIN we wrote.")
        index, _, handle = self.prefix.auth_identity.partition(":")
        identity = (handle.upper(), index)
        admin = (self.prefix.hs_admin_handle.upper(), str(self.prefix.hs_admin_index))
        if identity == admin:
            step.detail = f"HS_ADMIN {self._admin_written()} names our identity and grants add/modify value and delete."
            return None
        members = self._group_members()
        if identity in members:
            step.detail = (f"HS_ADMIN {self._admin_written()} names a group (HS_VLIST) that holds "
                           f"{self.prefix.auth_identity}, with add/modify value and delete.")
            return None
        self._fail(step, f"HS_ADMIN {self._admin_written()} names neither our identity {self.prefix.auth_identity} "
                   "nor a group (HS_VLIST) that holds it: only a server admin with full access could change the "
                   "handles we create.",
                   f"Set 'HS_ADMIN handle' and 'HS_ADMIN index' to our identity ({handle}, {index}), or to a group "
                   "that lists it.")

    def _group_members(self) -> set[tuple[str, str]]:
        try:
            answer = self.client.get_handle(self.prefix.hs_admin_handle, indexes=[self.prefix.hs_admin_index],
                                            authenticated=True)
        except HandleServerError:
            return set()
        members = set()
        for value in (answer.body or {}).get("values", []):
            data = value.get("data")
            if value.get("type") == "HS_VLIST" and isinstance(data, dict) and isinstance(data.get("value"), list):
                members |= {(str(m.get("handle", "")).upper(), str(m.get("index"))) for m in data["value"]}
        return members

    def _admin_written(self) -> str:
        return f"{self.prefix.hs_admin_index}:{self.prefix.hs_admin_handle} {self.prefix.hs_admin_permissions}"


def _admin_key(value: dict[str, Any]) -> tuple[str, str, str]:
    return (str(value.get("handle", "")).upper(), str(value.get("index")), str(value.get("permissions")))


def _der(pem: str) -> bytes:
    """The certificate's bytes (ValueError if `pem` is not one PEM certificate)."""
    return ssl.PEM_cert_to_DER_cert(pem.strip() + "\n")


def _fingerprint(pem: str) -> str:
    """The start of the certificate's SHA-256 fingerprint, as `openssl x509 -fingerprint -sha256` shows it."""
    digest = hashlib.sha256(_der(pem)).hexdigest().upper()
    return "SHA-256 " + ":".join(digest[i:i + 2] for i in range(0, 16, 2)) + "..."


def format_report(report: Report) -> str:
    """The report as plain text (the management command's output)."""
    marks = {OK: "ok", WARNING: "WARNING", FAILED: "FAILED", NOT_RUN: "not run"}
    lines = [f"Check connection: prefix {report.prefix} on {report.server_url}"]
    for number, step in enumerate(report.steps, 1):
        lines.append(f"{number:>2}. [{marks[step.status]}] {step.title}")
        if step.detail:
            lines.append(f"      {step.detail}")
        if step.fix and step.status != OK:
            lines.append(f"      To fix: {step.fix}")
    lines.append("All steps passed." if report.ok else f"The connection is NOT ready: see the failed {'step' if report.failed_count == 1 else 'steps'}.")
    return "\n".join(lines)

