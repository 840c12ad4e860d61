"""Bulk writes below the ORM's per-row cost: the plumbing of the services and the outbox, not a service.

`insert_rows` inserts many rows from tuples (COPY on PostgreSQL, bulk_create elsewhere); `update_rows` saves
some fields of many rows in one UPDATE per chunk. Both run in the caller's transaction and know nothing of
handles: tests/test_dbwrites.py exercises them on PostgreSQL and on SQLite (`make run`'s database).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

from django.db import connection, transaction
from django.db.models import Field, Model, Value
from django.db.models.expressions import Expression, RawSQL
from django.utils import timezone

BULK_BATCH_SIZE = 2000

T = TypeVar("T")


def chunks(items: Sequence[T], size: int = BULK_BATCH_SIZE) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def insert_rows(model: type[Model], columns: list[str], rows: list[tuple]) -> list[int]:
    """Insert rows given as tuples of values for `columns` (field attnames); the model's other fields
    take their defaults, evaluated once. Returns the new ids in order.

    On PostgreSQL by COPY, several times faster than INSERT and without building model instances: the
    ids are drawn from the table's sequence first, so nothing needs RETURNING. Values travel as Python
    values (text, numbers, booleans, datetimes, None), so not for JSON fields. A unique violation raises
    IntegrityError, as bulk_create does.
    """
    if not rows:
        return []
    meta = model._meta
    now = timezone.now()
    rest = [f for f in meta.concrete_fields if f.attname not in columns and not f.primary_key]
    defaults = tuple(now if getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False) else f.get_default()
                     for f in rest)
    names = [*columns, *(f.attname for f in rest)]
    db = transaction.get_connection()
    if db.vendor != "postgresql":
        objects = [model(**dict(zip(names, (*row, *defaults), strict=True))) for row in rows]
        model._default_manager.bulk_create(objects, batch_size=BULK_BATCH_SIZE)
        return [obj.pk for obj in objects]
    fields = {f.attname: f for f in meta.concrete_fields}
    column_list = ", ".join(db.ops.quote_name(fields[name].column) for name in [meta.pk.attname, *names])
    with db.cursor() as cursor:
        cursor.execute("SELECT nextval(pg_get_serial_sequence(%s, %s)) FROM generate_series(1, %s)",
                       [meta.db_table, meta.pk.column, len(rows)])
        ids = [pk for (pk,) in cursor.fetchall()]
        with db.wrap_database_errors, cursor.cursor.copy(
                f"COPY {db.ops.quote_name(meta.db_table)} ({column_list}) FROM STDIN") as copy:
            for pk, row in zip(ids, rows, strict=True):
                copy.write_row((pk, *row, *defaults))
    return ids


def update_rows(objs: Sequence[Model], fields: list[str]) -> None:
    """Save `fields` of many rows of one model, like bulk_update but with a CASE only for a field whose
    values differ: building one When per row and field made bulk_update cost more than the pushes. One
    UPDATE per BULK_BATCH_SIZE rows, which keeps its parameters within SQLite's limit."""
    for chunk in chunks(objs):
        _update_chunk(chunk, fields)


def _update_chunk(objs: Sequence[Model], fields: list[str]) -> None:
    model = type(objs[0])
    values: dict[str, Expression] = {}
    for name in fields:
        field = model._meta.get_field(name)
        if not isinstance(field, Field):  # a reverse relation or a generic foreign key has no column
            raise ValueError(f"{model.__name__}.{name} is not a column: update_rows saves columns only.")
        by_pk = {obj.pk: getattr(obj, field.attname) for obj in objs}
        if len(set(by_pk.values())) == 1:
            values[name] = Value(next(iter(by_pk.values())), output_field=field)
        else:  # a plain SQL CASE: Case(When(pk=...)) costs a filter resolution per row
            pk_column = connection.ops.quote_name(model._meta.pk.column)
            whens = " ".join(["WHEN %s THEN %s"] * len(by_pk))
            params = [p for pk, v in by_pk.items() for p in (pk, field.get_db_prep_value(v, connection))]
            values[name] = RawSQL(f"CASE {pk_column} {whens} END", params, output_field=field)
    model._default_manager.filter(pk__in=[obj.pk for obj in objs]).update(**values)
