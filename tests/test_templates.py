"""Template source rules that Django does not enforce."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = sorted([*ROOT.glob("templates/**/*.html"), *ROOT.glob("handles/**/templates/**/*.html")])


def test_there_are_templates_to_check():
    assert len(TEMPLATES) > 20


def test_no_template_has_a_multi_line_hash_comment():
    """`{# ... #}` is a comment only on one line; across lines Django prints it as text (it showed as
    "{# A progress bar ..." above every progress bar). Longer comments use {% comment %}."""
    offenders = [f"{path.relative_to(ROOT)}:{number}"
                 for path in TEMPLATES
                 for number, line in enumerate(path.read_text().splitlines(), 1)
                 if re.search(r"\{#(?!.*#\})", line)]
    assert offenders == []


def test_counts_agree_with_their_nouns():
    """'1 handle', '2 lines': templates use |pluralize, code handles.labels.counted (ngettext); no '(s)'."""
    from handles.labels import counted

    assert (counted(1, "handle"), counted(2, "line"), counted(12078, "failed request")) == (
        "1 handle", "2 lines", "12,078 failed requests")
    offenders = [f"{path.relative_to(ROOT)}:{number}"
                 for path in TEMPLATES
                 for number, line in enumerate(path.read_text().splitlines(), 1)
                 if re.search(r"[a-z]\(s\)", line.replace("http(s)", ""))]
    assert offenders == []
