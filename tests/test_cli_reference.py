"""The CLI reference page shows what ``--help`` prints: a test keeps them equal.

``python tests/test_cli_reference.py`` rewrites the help blocks of docs/reference/cli.md
from the parser (each ```` ```text ```` block after a ``## command`` heading; the first
block is the top-level help).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

PAGE = Path(__file__).resolve().parents[1] / "docs" / "reference" / "cli.md"
WIDTH = "90"  # argparse wraps help at $COLUMNS


def _help(command: str | None) -> str:
    from slowflow.cli import build_parser

    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = WIDTH
    try:
        parser = build_parser()
        if command is None:
            return parser.format_help().rstrip() + "\n"
        sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
        return sub.choices[command].format_help().rstrip() + "\n"
    finally:
        if old is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old


def render(text: str) -> str:
    """The page with every help block replaced by the parser's current help."""
    out, command, pos = [], None, 0
    for m in re.finditer(r"^## (\S+)$|^```text\n(.*?)^```$", text, flags=re.M | re.S):
        if m.group(1):
            command = m.group(1)
            continue
        out.append(text[pos : m.start()])
        out.append("```text\n" + _help(command) + "```")
        pos = m.end()
    out.append(text[pos:])
    return "".join(out)


def test_cli_reference_shows_the_current_help():
    """Every help block on the page equals what the parser prints (run this file to
    regenerate the page)."""
    text = PAGE.read_text(encoding="utf-8")
    assert render(text) == text, (
        "docs/reference/cli.md is stale: python tests/test_cli_reference.py"
    )


if __name__ == "__main__":
    PAGE.write_text(render(PAGE.read_text(encoding="utf-8")), encoding="utf-8")
    print(f"wrote {PAGE}")
