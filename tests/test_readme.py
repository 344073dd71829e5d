"""The README keeps its promises: short, every command in its code blocks parses, every link resolves."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from conftest import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MAX_README_LINES = 250


def code_block_commands(path: Path) -> list[str]:
    """Command lines of the page's ```bash blocks (continuation lines joined, comments dropped)."""
    commands, inside, pending = [], False, ""
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            inside = not inside and line.strip() in ("```bash", "```sh", "```console", "```shell")
            continue
        if not inside or not line.strip() or line.lstrip().startswith("#"):
            continue
        pending += line.rstrip().removesuffix("\\") + " "
        if not line.rstrip().endswith("\\"):
            commands.append(pending.strip().removeprefix("$ "))
            pending = ""
    return commands


def project_arguments(command: str) -> list[str] | None:
    """The arguments that ``python main.py`` would parse for a project command line, else None."""
    words = shlex.split(command, comments=True)
    if words[:2] == ["python", "main.py"] or words[:2] == ["python3", "main.py"]:
        return words[2:]
    if words and (words[0] == "unet" or words[0].endswith("/unet")):
        return words[1:]
    if words[:1] == ["./run.sh"]:
        return None if words[1:2] == ["test"] else ["all", *words[1:]]
    return None


def test_the_readme_is_a_front_door_of_at_most_250_lines():
    assert len((ROOT / "README.md").read_text().splitlines()) <= MAX_README_LINES


@pytest.mark.parametrize("page", PAGES, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_command_in_the_code_blocks_parses(page):
    from isbi_unet.cli.parser import build_parser

    parser = build_parser()
    checked = 0
    for command in code_block_commands(page):
        arguments = project_arguments(command)
        if arguments is None or "--help" in arguments:
            continue
        try:
            parser.parse_args(arguments)
        except SystemExit as stop:
            raise AssertionError(f"{page.name}: `{command}` does not parse") from stop
        checked += 1
    if page == ROOT / "README.md":
        assert checked >= 8, "the README shows the pipeline one command per step"


def test_the_two_set_up_commands_come_first():
    commands = code_block_commands(ROOT / "README.md")
    assert commands[:2] == ["./run.sh", "./run.sh test"]


@pytest.mark.parametrize("page", PAGES, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        path = (page.parent / target.split("#", 1)[0]).resolve()
        assert path.exists(), f"{page.name}: link {target} does not resolve"
