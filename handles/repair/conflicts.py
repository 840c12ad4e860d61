"""Handles an import file cites for two (or more) records: what the Handle server resolves each to now.

The dry run marks such lines as conflicts and imports none of them; staff then choose, on the import's
conflicts page, which record keeps the handle (handles.repair.services.import_conflict_resolve). To choose
well they need to know where the handle leads today: this reads the server once per conflicting handle
(a few per file), after the dry run, outside any transaction. The task and the command call it.
"""

from __future__ import annotations

from dataclasses import dataclass

from handles.handle_server.client import HandleNotFound, HandleServerError, client_for
from handles.models import Prefix
from handles.repair.models import ImportRow

NOT_ON_SERVER = "Not on the Handle server."


@dataclass(frozen=True)
class ConflictGroup:
    """One handle and the lines that cite it, in file order."""

    handle_text: str
    rows: list[ImportRow]

    @property
    def server_url(self) -> str:
        return self.rows[0].server_url

    @property
    def server_note(self) -> str:
        return self.rows[0].server_note

    @property
    def resolved(self) -> bool:
        return any(row.resolution for row in self.rows)

    def resolves_to(self) -> list[ImportRow]:
        """The lines whose target the server resolves the handle to now."""
        return [row for row in self.rows if self.server_url and row.target_url == self.server_url]


def conflict_groups(batch_id: int) -> list[ConflictGroup]:
    groups: dict[tuple, list[ImportRow]] = {}
    for row in ImportRow.objects.filter(batch_id=batch_id).file_conflicts().order_by("prefix_id", "suffix_key", "line"):
        groups.setdefault((row.prefix_id, row.suffix_key), []).append(row)
    return [ConflictGroup(rows[0].handle_text, rows) for rows in groups.values()]


def read_server(batch_id: int) -> dict[tuple[int, str], tuple[str, str]]:
    """{(prefix id, suffix key): (URL, note)} for each handle the file cites for several records: the URL
    the server holds, or '' and why not (not on the server, or could not be read)."""
    found: dict[tuple[int, str], tuple[str, str]] = {}
    prefixes = {}
    for group in conflict_groups(batch_id):
        row = group.rows[0]
        if row.prefix_id is None:  # not so: file_conflicts() keeps the lines of one of our prefixes only
            continue
        key = (row.prefix_id, row.suffix_key)
        if row.prefix_id not in prefixes:
            prefixes[row.prefix_id] = client_for(Prefix.objects.get(pk=row.prefix_id).server_config())
        try:
            url, _ = prefixes[row.prefix_id].get_url(row.handle_text)
            found[key] = (url or "", "" if url else "The server's record has no URL.")
        except HandleNotFound:
            found[key] = ("", NOT_ON_SERVER)
        except HandleServerError as exc:
            found[key] = ("", f"Could not be read from the server: {exc}"[:300])
    return found
