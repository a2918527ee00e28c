#!/usr/bin/env python3
"""Check the links of README.md and the book (docs/): every relative link must name a file or
folder that exists, every `#anchor` a heading of the page it points to, and every page of docs/
must be listed in docs/SUMMARY.md (no orphan pages). Exit status 1 with one line per problem.

    python3 scripts/check_docs.py            # from the repository root (just docs runs it)
"""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINK = re.compile(r"\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6} (.+?)\s*$", re.MULTILINE)
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
CHECKED = 0


def slug(heading: str) -> str:
    """The anchor mdBook and GitHub give a heading: lower case, spaces to `-`, punctuation dropped."""
    h = heading.strip().lower()
    h = re.sub(r"[^\w\- ]", "", h)
    return h.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text())
    return {slug(h) for h in HEADING.findall(text)}


def check(page: Path) -> list[str]:
    global CHECKED
    problems = []
    text = FENCE.sub("", page.read_text())
    for target in LINK.findall(text):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        path, _, anchor = target.partition("#")
        dest = page if not path else (page.parent / path)
        where = f"{page.relative_to(ROOT)}: link `{target}`"
        CHECKED += 1
        if not dest.exists():
            problems.append(f"{where}: no such file or folder")
            continue
        if anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            problems.append(
                f"{where}: no heading with anchor #{anchor} in {dest.resolve().relative_to(ROOT)}"
            )
    return problems


def main() -> int:
    docs = ROOT / "docs"
    pages = [ROOT / "README.md", *sorted(docs.rglob("*.md"))]
    problems = [p for page in pages for p in check(page)]
    summary = (docs / "SUMMARY.md").read_text()
    listed = {(docs / t).resolve() for t in LINK.findall(summary)}
    for page in sorted(docs.rglob("*.md")):
        if page.name != "SUMMARY.md" and page.resolve() not in listed:
            problems.append(f"{page.relative_to(ROOT)}: not listed in docs/SUMMARY.md")
    for p in problems:
        print(p)
    print(
        f"check_docs: {len(pages)} pages, {CHECKED} relative links, {len(problems)} problem(s)",
        file=sys.stderr,
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
