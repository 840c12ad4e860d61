"""What the code relies on is written down in the repository: comments cite docs/handle-server.md by section,
never notes that live outside the repository, and every cited section exists."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = [path for top in ("handles", "handles_project", "bench", "tests") for path in (ROOT / top).rglob("*.py")
           if "migrations" not in path.parts]
OUTSIDE = re.compile(r"HANDLE_API|\[TM §|\[LIVE|\[SRC\b|\[PROXY\]")
CITATION = re.compile(r"docs/handle-server\.md((?:,? ?§\d+)+)")
HEADING = re.compile(r"^## §(\d+) ", re.MULTILINE)


def test_sources_were_found() -> None:
    assert len(SOURCES) > 100
    assert Path(__file__) in SOURCES


def test_no_comment_cites_documents_outside_the_repository() -> None:
    this_file = Path(__file__)
    offenders = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
                 for path in SOURCES if path != this_file
                 for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
                 if OUTSIDE.search(line)]
    assert offenders == []


def test_every_cited_section_of_the_handle_server_notes_exists() -> None:
    sections = set(HEADING.findall((ROOT / "docs" / "handle-server.md").read_text(encoding="utf-8")))
    assert {"1", "4", "12"} <= sections
    cited = {(path.relative_to(ROOT), number)
             for path in SOURCES
             for match in CITATION.finditer(path.read_text(encoding="utf-8"))
             for number in re.findall(r"§(\d+)", match.group(1))}
    assert len(cited) > 20
    assert sorted(str(place) for place in cited if place[1] not in sections) == []


def test_the_probe_finds_an_outside_citation() -> None:
    assert OUTSIDE.search("# see [TM §3.6]") and OUTSIDE.search("HANDLE_API.md §2") and OUTSIDE.search("[LIVE 12b]")
    assert not OUTSIDE.search("(docs/handle-server.md §5)")
