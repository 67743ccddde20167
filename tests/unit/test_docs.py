"""The README and the manual in docs/ point at things that exist.

Every relative Markdown link (``[text](docs/api.md#errors)``) leads to an existing file, and its
anchor, if any, to a heading of that file (GitHub's heading ids). Every repository path named in
code (inline code spans and fenced blocks), such as ``agents/table/store.py`` or ``tests/faults/``,
exists: a path counts as one of the repository's when it starts with one of its top-level
folders. Paths created at run time (``.flux/kafka``, ``FILE.rejects.jsonl``) do not start so.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted([*ROOT.glob("*.md"), *(ROOT / "docs").glob("*.md")])
REPO_FOLDERS = ("flux", "agents", "api", "tests", "bench", "docs", ".ci")

FENCE = re.compile(r"^ {0,3}(```|~~~).*?^ {0,3}\1[^\n]*$", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"(`+)(.+?)\1", re.DOTALL)
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^ {0,3}#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", re.MULTILINE)
REPO_PATH = re.compile(r"(?<![\w./~$<{-])(?:" + "|".join(re.escape(folder) for folder in REPO_FOLDERS) + r")/[\w./*-]*")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def _without_code(text: str) -> str:
    """The prose of a Markdown text: fenced blocks and inline code spans blanked out."""
    return INLINE_CODE.sub(" ", FENCE.sub(" ", text))


def code_of(text: str) -> list[str]:
    """The contents of the fenced blocks and inline code spans of a Markdown text."""
    fenced = [match.group(0) for match in FENCE.finditer(text)]
    inline = [match.group(2) for match in INLINE_CODE.finditer(FENCE.sub(" ", text))]
    return fenced + inline


def slug(heading: str) -> str:
    """GitHub's id of a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text stays, its target goes
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """The ids of a Markdown text's headings, with GitHub's -1, -2... for repeated ones."""
    seen: dict[str, int] = {}
    found = set()
    for match in HEADING.finditer(FENCE.sub(" ", text)):
        base = slug(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def broken_links(doc: Path) -> list[str]:
    """The relative links of ``doc`` whose file, or whose anchor in that file, does not exist."""
    text = doc.read_text(encoding="utf-8")
    broken = []
    for match in LINK.finditer(_without_code(text)):
        target = match.group(1)
        if SCHEME.match(target):
            continue  # https:, mailto:...: not this repository's
        path_part, _, anchor = target.partition("#")
        linked = doc if not path_part else (doc.parent / path_part).resolve()
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked.read_text(encoding="utf-8")):
            broken.append(f"{target}: no heading #{anchor} in {path_part or doc.name}")
    return broken


def repo_paths(text: str) -> set[str]:
    """The repository paths named in a Markdown text's code."""
    found = set()
    for code in code_of(text):
        for match in REPO_PATH.finditer(code):
            found.add(match.group(0).rstrip("."))
    return found


def missing_paths(text: str, root: Path = ROOT) -> list[str]:
    """The repository paths named in ``text``'s code that do not exist under ``root``."""
    missing = []
    for name in sorted(repo_paths(text)):
        exists = any(root.glob(name)) if "*" in name else (root / name).exists()
        if not exists:
            missing.append(name)
    return missing


def _name(doc: Path) -> str:
    return str(doc.relative_to(ROOT))


def test_the_docs_are_found() -> None:
    names = {_name(doc) for doc in DOCS}
    assert {"README.md", "docs/api.md", "docs/architecture.md", "docs/configuration.md"} <= names


@pytest.mark.parametrize("doc", DOCS, ids=_name)
def test_relative_links_lead_somewhere(doc: Path) -> None:
    assert broken_links(doc) == []


@pytest.mark.parametrize("doc", DOCS, ids=_name)
def test_named_repository_paths_exist(doc: Path) -> None:
    assert missing_paths(doc.read_text(encoding="utf-8")) == []


def test_the_readme_links_every_page_of_the_manual() -> None:
    readme = _without_code((ROOT / "README.md").read_text(encoding="utf-8"))
    linked = {match.group(1).partition("#")[0] for match in LINK.finditer(readme)}
    pages = {f"docs/{page.name}" for page in (ROOT / "docs").glob("*.md")}
    assert pages - linked == set()
    assert {"FAULTS.md", "BENCHMARKS.md"} <= linked


def test_the_readme_gives_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "make run" in readme
    assert "make test" in readme


@pytest.mark.parametrize("page", sorted((ROOT / "docs").glob("*.md")), ids=_name)
def test_each_page_starts_with_a_title_and_a_paragraph(page: Path) -> None:
    lines = page.read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("# ")
    body = [line for line in lines[1:] if line.strip()]
    assert body and not body[0].startswith(("#", "|", "```", "- ")), "the title is followed by a paragraph"


# The checks themselves: they find what they are meant to find.


def test_a_missing_path_is_found(tmp_path: Path) -> None:
    (tmp_path / "agents" / "table").mkdir(parents=True)
    (tmp_path / "agents" / "table" / "store.py").write_text("")
    text = "See `agents/table/store.py`, `agents/table/`, `agents/gone.py` and\n```\nrun tests/faults/\n```\n"
    assert missing_paths(text, tmp_path) == ["agents/gone.py", "tests/faults/"]


def test_paths_that_are_not_the_repositorys_are_left_alone(tmp_path: Path) -> None:
    text = (
        "`.flux/kafka`, `~/.cache/flux/kafka-4.1.1`, `FLUX_DATA_DIR/replay/`, `http://localhost:3000/api/ws`, "
        "`WS /api/ws`, `acme/sensor-01`, `FILE.rejects.jsonl` and prose naming agents/gone.py"
    )
    assert missing_paths(text, tmp_path) == []


def test_a_broken_link_and_a_broken_anchor_are_found(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "api.md").write_text("# API\n\n## Read your writes\n\n## Errors\n\n## Errors\n")
    doc = tmp_path / "README.md"
    doc.write_text(
        "[ok](docs/api.md) [ok](docs/api.md#read-your-writes) [ok](docs/api.md#errors-1) [web](https://x.org/a)\n"
        "[gone](docs/gone.md) [bad anchor](docs/api.md#nothing) `[in code](docs/nope.md)`\n"
    )
    assert broken_links(doc) == [
        "docs/gone.md: no such file",
        "docs/api.md#nothing: no heading #nothing in docs/api.md",
    ]


def test_slugs_follow_github() -> None:
    assert slug("Time travel: `?at=`") == "time-travel-at"
    assert slug("History: `GET /api/events`") == "history-get-apievents"
    assert slug("A local cluster: `make cluster`") == "a-local-cluster-make-cluster"
