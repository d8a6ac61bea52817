"""The product's pages stay pages: README a front page, docs/benchmarks.md a page an
engineer reads, and no tracked text narrating how the work went (that is git's log)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINE_LIMITS = {"README.md": 300, "docs/benchmarks.md": 400}
# Wording of a work log rather than of a product. The words are put together from
# parts, so that this file's own text is no example of what it looks for.
_WORK = "session"
_TUNE = "tuning"
HISTORY = re.compile(
    rf"\b{_WORK}s?\s+\d"
    rf"|\b{_WORK}['\u2019]s\b"
    rf"|\brounds?\s+of\s+{_TUNE}\b"
    r"|\b(?:first|second|third|fourth|fifth)\s+round['\u2019]s\b"
    r"|\bissues?\s+#?\d"
    r"|\bwhat\s+was\s+tried\b",
    re.IGNORECASE,
)
SKIPPED_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".ico", ".lock", ".db"}


def tracked_text_files() -> list[Path]:
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
        ).stdout.decode()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: nothing is tracked")
    files = []
    for name in filter(None, listed.split("\0")):
        path = ROOT / name
        if path.suffix in SKIPPED_SUFFIXES or name.endswith("package-lock.json"):
            continue
        if path.is_file():
            files.append(path)
    return files


@pytest.mark.parametrize(("name", "limit"), sorted(LINE_LIMITS.items()))
def test_a_page_stays_readable_in_length(name: str, limit: int) -> None:
    lines = (ROOT / name).read_text(encoding="utf-8").count("\n")
    assert lines <= limit, f"{name} has {lines} lines; keep it under {limit}"


def test_no_tracked_text_narrates_the_history_of_the_work() -> None:
    found = []
    for path in tracked_text_files():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # not text
        for number, line in enumerate(text.splitlines(), 1):
            if match := HISTORY.search(line):
                found.append(f"{path.relative_to(ROOT)}:{number}: {match.group(0)!r}")
    assert not found, "history wording (it belongs in commit messages):\n" + "\n".join(found)


@pytest.mark.parametrize(
    "line",
    [
        "{Work} 14's runs",
        "as measured in {work} 9",
        "{work}s 8-13",
        "after the third round of {tune}",
        "the second {round}'s list",
        "{issue} 6's smoke run",
    ],
)
def test_the_history_pattern_catches_log_wording(line: str) -> None:
    text = line.format(Work=_WORK.title(), work=_WORK, tune=_TUNE, round="round", issue="issue")
    assert HISTORY.search(text), text


@pytest.mark.parametrize(
    "line",
    [
        "aiohttp.Client{Work}'s connector",
        "the {work} is closed on shutdown",
        "API keys: issue, look up, list, revoke",
        "a round trip to the database",
        "the first round: all four slots, all hanging",
    ],
)
def test_the_history_pattern_leaves_product_wording_alone(line: str) -> None:
    text = line.format(Work=_WORK.title(), work=_WORK)
    assert not HISTORY.search(text), text
