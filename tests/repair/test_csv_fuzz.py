"""Broken import files: a corpus of the files people really send, and hypothesis for the rest. Every file
gets a clear message or a per-line verdict; never an exception, never a partial import."""

from __future__ import annotations

import csv
import io

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from handles.models import Handle
from handles.repair import services
from handles.repair.csvfile import ImportFileError, csv_lines, looks_like_formula, safe_cell
from handles.repair.models import ImportRow

HEADER = "Handle URL,MMS ID,dc:title\n"

# (file bytes, what the person is told): whole-file problems.
BROKEN_FILES = [
    (b"", "empty"),
    (b"\n\n", "empty"),
    (b"PK\x03\x04\x14\x00\x06\x00", "spreadsheet workbook"),
    ("Handle URL,MMS ID\n11084/1,1\n".encode("utf-16"), "UTF-16"),
    ("Handle URL,Titel\n11084/1,Gr\u00fc\u00dfe\n".encode("cp1252"), "not valid utf-8 (byte 0xfc on line 2)"),
    (b"Handle URL,MMS ID\n11084/1,1\x00\n", "Line 2 contains a NUL character"),
    (b"Handle URL,MMS ID,Handle URL\n11084/1,1,x\n", "'Handle URL' appears twice in the header (columns 1 and 3)"),
    (b"handle,HANDLE\n", "appears twice in the header"),
    (HEADER.encode() + b'11084/1,"' + b"x" * 200_000 + b"\n", "longer than 131,072 characters"),
]


@pytest.mark.parametrize(("content", "message"), BROKEN_FILES)
def test_whole_file_problems_are_explained(grinnell_prefix, content, message):
    with pytest.raises(ImportFileError) as raised:
        batch = services.import_batch_create(file_name="broken.csv", content=content)
        batch = services.import_batch_configure(batch=batch, mapping=batch.mapping, prefix=grinnell_prefix,
                                                source_system="alma")
        batch = services.import_batch_analyse(batch.pk)
        raise ImportFileError(batch.error)  # a problem found only while reading the lines
    assert message in raised.value.message
    assert not ImportRow.objects.exists() and not Handle.objects.exists()


# (one line after the header, the reason given for it): problems of one line.
BROKEN_LINES = [
    ("=cmd|' /C calc'!A0,1,x", "looks like a spreadsheet formula"),
    ('11084/1,1,"=HYPERLINK(""http://evil.example"",""click"")"', "looks like a spreadsheet formula"),
    ("11084/2,@SUM(1+1),x", "looks like a spreadsheet formula"),
    ("11084/3,1,x,unexpected,extra", "5 cells, but the header names 3 columns"),
    ("11084/4,1," + "t" * 20_000, "at most 10,000 are accepted"),
    ("11084/\u200b5,1,x", "control or unassigned characters"),
    ("11084/6 ,1," + "t" * 1001, "longer than 1,000 characters"),
]


@pytest.mark.parametrize(("line", "reason"), BROKEN_LINES)
def test_line_problems_are_reasons_in_the_report(grinnell_prefix, line, reason):
    batch = services.import_batch_create(file_name="t.csv", content=(HEADER + line + "\n11084/ok,9,fine\n").encode())
    batch = services.import_batch_configure(batch=batch, mapping=batch.mapping, prefix=grinnell_prefix,
                                            source_system="alma")
    batch = services.import_batch_analyse(batch.pk)
    assert batch.analysed
    bad, good = batch.rows.order_by("line")
    assert bad.outcome == "invalid" and reason in bad.reason
    assert good.outcome == "new"


def test_safe_cells_and_exports():
    assert [safe_cell(v) for v in ("=1+2", "+1", "-x", "@a", "\tx", "ok", None, 3)] == [
        "'=1+2", "'+1", "'-x", "'@a", "'\tx", "ok", "", "3"]
    text = "".join(csv_lines(["a", "b"], [["=cmd|' /C calc'!A0", "plain"]]))
    assert list(csv.reader(io.StringIO(text.lstrip("\ufeff")))) == [["a", "b"], ["'=cmd|' /C calc'!A0", "plain"]]
    assert looks_like_formula("=1") and looks_like_formula("-SUM(A1)") and not looks_like_formula("-30- newsletter")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.binary(max_size=600) | st.text(max_size=400).map(lambda t: t.encode("utf-8")))
def test_any_bytes_give_a_message_or_a_report(grinnell_prefix, content):
    try:
        batch = services.import_batch_create(file_name="fuzz.csv", content=content)
    except ImportFileError as exc:
        assert exc.message
        return
    header = [h for h in batch.header if h]
    mapping = {"handle": header[0]} if header else {}
    try:
        batch = services.import_batch_configure(batch=batch, mapping=mapping, prefix=grinnell_prefix,
                                                url_template="https://x.example/{suffix}")
    except services.HandleServiceError as exc:
        assert exc.message
        return
    batch = services.import_batch_analyse(batch.pk)
    assert batch.analysed or batch.state == "failed"
    if batch.state == "failed":
        assert batch.error and not batch.rows.exists() and "Internal error" not in batch.error
    else:
        assert batch.rows.count() == batch.counts["rows"]
        assert not batch.rows.filter(outcome="invalid", reason="").exists()


handles = st.from_regex(r"\A[0-9A-Za-z_.\-]{1,12}\Z")
forms = st.sampled_from(["{h}", "hdl:{h}", "http://hdl.handle.net/{h}", "https://hdl.handle.net/{h}",
                         " {h} ", "HTTPS://HDL.HANDLE.NET/{h}"])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(handles, forms), min_size=1, max_size=15))
def test_every_written_form_of_a_handle_is_the_same_handle(grinnell_prefix, rows):
    lines = "".join(f"{form.format(h='11084/' + suffix)}\n" for suffix, form in rows)
    batch = services.import_batch_create(file_name="f.csv", content=("Handle\n" + lines).encode())
    batch = services.import_batch_configure(batch=batch, mapping={"handle": "Handle"}, prefix=grinnell_prefix,
                                            url_template="https://x.example/{suffix}")
    batch = services.import_batch_analyse(batch.pk)
    valid = [s for s, _ in rows if s not in (".", "..")]
    keys = {s.upper() for s in valid}
    # One `new` per distinct handle (case-insensitive); the rest repeat a line or conflict in case only.
    assert batch.counts.get("new", 0) + batch.counts.get("conflict", 0) >= len(keys) > 0 or not valid
    assert set(batch.rows.filter(outcome__in=["new", "duplicate", "conflict"]).values_list("suffix_key", flat=True)) \
        == keys
