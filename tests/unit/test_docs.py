"""The README's command table lists every command of the CLI."""

import argparse
import re
from pathlib import Path

from guardstream_cli.main import build_parser

ROOT = Path(__file__).resolve().parents[2]


def test_readme_lists_every_command() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    documented = set(
        re.findall(r"^\| `guardstream ([a-z-]+)", (ROOT / "README.md").read_text(), re.M)
    )
    assert documented == set(sub.choices)


def test_docs_link_only_to_files_that_exist() -> None:
    for path in [ROOT / "README.md", ROOT / "SOURCES.md", *ROOT.glob("docs/*.md")]:
        for target in re.findall(r"\]\(([^)#]+\.md)", path.read_text()):
            assert (path.parent / target).exists(), f"{path.name} links to missing {target}"
