"""The README and docs/ explain the repository from inside it: every relative link points to a file of the repository
(and, with ``#anchor``, to a heading of that file), and no page refers to a file outside it (``../`` past the root,
a machine path, a design note that is not shipped). Pure text checks, no imports of the package."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]

_FENCE = re.compile(r"^\s*(```|~~~)")
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_CODE_SPAN = re.compile(r"`[^`]*`")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_UP_PATH = re.compile(r"(?<![\w.])((?:\.\./)+[\w.\-/]*)")
# Paths of a particular machine or of files that are not part of the repository.
_OUTSIDE = re.compile(r"/work/|/home/|/Users/|/tmp/|/root/|\bDESIGN\.md\b|\.\./shared\b")


def _prose_lines(text: str):
    """(line number, line) outside fenced code blocks."""
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield number, line


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: link targets dropped, lower case, punctuation removed, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    anchors = set()
    for _, line in _prose_lines(path.read_text(encoding="utf-8")):
        match = _HEADING.match(line)
        if not match:
            continue
        slug = _slug(match.group(2))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def _links(path: Path):
    for number, line in _prose_lines(path.read_text(encoding="utf-8")):
        for match in _LINK.finditer(_CODE_SPAN.sub("", line)):
            yield number, match.group(1)


def _inside(path: Path) -> bool:
    return path.resolve().is_relative_to(ROOT)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    broken = []
    for number, target in _links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        destination = (page.parent / file_part) if file_part else page
        where = f"{page.relative_to(ROOT)}:{number}: {target}"
        if not _inside(destination):
            broken.append(f"{where} (outside the repository)")
        elif not destination.exists():
            broken.append(f"{where} (no such file)")
        elif anchor and destination.suffix == ".md" and anchor not in _anchors(destination):
            broken.append(f"{where} (no such heading)")
    assert not broken, "broken links:\n" + "\n".join(broken)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_reference_outside_the_repository(page):
    found = []
    for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
        where = f"{page.relative_to(ROOT)}:{number}"
        found += [f"{where}: {m.group(0)}" for m in _OUTSIDE.finditer(line)]
        found += [f"{where}: {m.group(1)}" for m in _UP_PATH.finditer(line) if not _inside(page.parent / m.group(1))]
    assert not found, "references outside the repository:\n" + "\n".join(found)


def test_checks_see_their_targets():
    """The checks themselves: a heading's anchor, a broken link and an outside path are recognised."""
    assert _slug("Training parity: `python -m grm_jax.compare trajectory`") == (
        "training-parity-python--m-grm_jaxcompare-trajectory")
    assert _slug("GPU: `bash benchmarks/accelerator.sh`") == "gpu-bash-benchmarksacceleratorsh"
    line = "see [a](docs/x.md#y), ![b](img.png) and `[c](not/a/link)`"
    assert [m.group(1) for m in _LINK.finditer(_CODE_SPAN.sub("", line))] == ["docs/x.md#y", "img.png"]
    assert _OUTSIDE.search("python x.py --out /tmp/a") and _OUTSIDE.search("../shared/spec")
    assert not _inside(ROOT / "../shared/x") and _inside(ROOT / "docs/../README.md")
