"""The documentation covers what the code offers.

The reference lives in docs/ (the README keeps the pitch, the set-up and a tour), so a new
command, option, JSON output, config key, source kind or selector could land without a word
about it.
These checks walk the CLI's click tree and the config schema and name what no page
documents. They also hold the README's two set-up commands to what CI and a new user run,
and every relative link to a page and heading that exist. No network, no subprocess: the
whole file runs in well under a second.
"""

from __future__ import annotations

import importlib
import re
import tomllib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import click
import pytest

from monitor import config as config_module
from monitor.config import KIND_SPECIFIC_KEYS, TOP_KEYS, Key
from monitor.sources import ADAPTERS

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = ROOT / "README.md"
# Where reference text may live; ARCHITECTURE.md and CHANGELOG.md are linked, not reference.
REFERENCE_FILES = (README, *sorted(DOCS.glob("*.md")))
LINKED_FILES = (*REFERENCE_FILES, ROOT / "ARCHITECTURE.md", ROOT / "CHANGELOG.md")

# The first set-up command: what a new user types to see weightwatch work. It is the
# README's promise, so it is pinned here; the second is pinned by .ci/run.
DEMO_COMMAND = ("python3 -m venv .venv && .venv/bin/pip install -q -e . && "
                ".venv/bin/weightwatch demo")

# Each table of keys in monitor/config.py, and the heading of the docs section holding its
# rows. A new table of keys in the schema fails test_every_schema_table_has_a_section
# until it is placed here, so no table is skipped silently.
SCHEMA_SECTIONS = {
    "DATABASE_KEYS": "[database]",
    "CRAWL_KEYS": "[crawl]",
    "SCAN_KEYS": "[scan]",
    "SMTP_KEYS": "[smtp]",
    "ALERTS_KEYS": "[alerts]",
    "WEBHOOK_KEYS": "[alerts.webhook]",
    "ROUTE_KEYS": "[[alerts.routes]]",
    "CHANNEL_KEYS": "[[alerts.channels]]",
    "TARGET_COMMON_KEYS": "[[targets]]",
    "RULE_KEYS": "[[rules]]",
}
KIND_SPECIFIC_HEADING = "Kind-specific target keys"
SOURCES_HEADING = "Sources"
GLOBAL_OPTIONS_HEADING = "Global options"
JSON_PAGE = DOCS / "json-output.md"


# --- reading the pages -----------------------------------------------------------------


@dataclass(frozen=True)
class Section:
    """A heading and the text up to the next heading of any level."""

    path: Path
    level: int
    heading: str
    body: str

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)} ({'#' * self.level} {self.heading})"

    @property
    def text(self) -> str:
        return f"{self.heading}\n{self.body}"


_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def read_sections(path: Path) -> list[Section]:
    """Sections of a Markdown file; `#` lines inside fenced code are not headings."""
    found: list[Section] = []
    level, heading = 0, ""
    body: list[str] = []
    fenced = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        match = None if fenced else _HEADING.match(line)
        if match:
            found.append(Section(path, level, heading, "\n".join(body)))
            level, heading, body = len(match.group(1)), match.group(2), []
        else:
            body.append(line)
    found.append(Section(path, level, heading, "\n".join(body)))
    return found


def all_sections(files: Iterable[Path] = REFERENCE_FILES) -> list[Section]:
    return [section for path in files for section in read_sections(path)]


def headed(sections: Iterable[Section], marker: str) -> list[Section]:
    """Sections whose heading holds `marker` in backticks, or is exactly `marker`."""
    return [s for s in sections if f"`{marker}`" in s.heading or s.heading == marker]


def table_rows(text: str) -> Iterator[list[str]]:
    """Cells of each Markdown table row (an escaped `\\|` stays inside its cell)."""
    for line in text.splitlines():
        if line.startswith("|") and not re.fullmatch(r"[|\s:-]+", line):
            yield [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip().strip("|"))]


def names_key(cell: str, key: str) -> bool:
    """`key`, or a dotted `table.key`, in backticks in a cell."""
    return re.search(rf"`(?:[\w.]+\.)?{re.escape(key)}`", cell) is not None


def names_option(text: str, option: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", text) is not None


# --- the command tree ----------------------------------------------------------------


def cli_root() -> click.Group:
    """The console script's command, found as pyproject declares it (the CLI may move)."""
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module_name, _, attribute = scripts["weightwatch"].partition(":")
    root = getattr(importlib.import_module(module_name), attribute)
    assert isinstance(root, click.Group)
    return root


def commands(group: click.Group, prefix: str = "weightwatch") -> Iterator[tuple[str,
                                                                                click.Command]]:
    """Every command a user can run: leaves, and groups that run without a subcommand."""
    for name, command in sorted(group.commands.items()):
        path = f"{prefix} {name}"
        if command.hidden:
            continue
        if not isinstance(command, click.Group) or command.invoke_without_command:
            yield path, command
        if isinstance(command, click.Group):
            yield from commands(command, path)


def long_options(command: click.Command) -> list[str]:
    """One name a reader would search for per option: its first long form."""
    found = []
    for param in command.params:
        if not isinstance(param, click.Option) or param.hidden:
            continue
        names = [o for o in (*param.opts, *param.secondary_opts) if o.startswith("--")]
        if names and names[0] != "--help":
            found.append(names[0])
    return found


def missing_commands(root: click.Group, sections: list[Section]) -> list[str]:
    problems = []
    for path, command in commands(root):
        documented = headed(sections, path)
        if not documented:
            problems.append(f"`{path}`: no heading in docs/ names it (e.g. ### `{path}`)")
            continue
        text = "\n".join(s.text for s in documented)
        for option in long_options(command):
            if not names_option(text, option):
                problems.append(f"`{path}`: option {option} is not in its section "
                                f"({', '.join(s.where for s in documented)})")
    global_text = "\n".join(s.text for s in headed(sections, GLOBAL_OPTIONS_HEADING))
    for option in long_options(root):
        if not names_option(global_text, option):
            problems.append(f"global option {option} is not under '{GLOBAL_OPTIONS_HEADING}'")
    return problems


def missing_json_contracts(root: click.Group, sections: list[Section]) -> list[str]:
    """Scripts read `--format json`: each command that prints it has its keys written down."""
    json_sections = [s for s in sections if s.path == JSON_PAGE]
    return [f"`{path} --format json`: no heading `{path}` in {JSON_PAGE.relative_to(ROOT)}"
            for path, command in commands(root)
            if "--format" in long_options(command) and not headed(json_sections, path)]


# --- the config schema ---------------------------------------------------------------


def schema_tables() -> dict[str, dict[str, Key]]:
    """Every module-level table of keys in monitor/config.py."""
    return {name: value for name, value in vars(config_module).items()
            if name.endswith("_KEYS") and isinstance(value, dict) and value
            and all(isinstance(spec, Key) for spec in value.values())}


def missing_config_keys(sections: list[Section]) -> list[str]:
    problems = []
    for name in sorted(TOP_KEYS):
        if not (headed(sections, f"[{name}]") or headed(sections, f"[[{name}]]")):
            problems.append(f"config table `{name}`: no heading `[{name}]` or `[[{name}]]`")
    for table, marker in SCHEMA_SECTIONS.items():
        keys = schema_tables().get(table, {})
        places = headed(sections, marker)
        if not places:
            problems.append(f"config `{marker}` ({table}): no heading `{marker}` in docs/")
            continue
        first_cells = [row[0] for s in places for row in table_rows(s.body)]
        for key in keys:
            if table == "TARGET_COMMON_KEYS" and key in KIND_SPECIFIC_KEYS:
                continue  # checked per kind by missing_kind_options
            if not any(names_key(cell, key) for cell in first_cells):
                problems.append(f"config key `{marker.strip('[]')}.{key}`: no table row under "
                                f"`{marker}` ({', '.join(s.where for s in places)})")
    return problems


def missing_kind_options(sections: list[Section]) -> list[str]:
    """Each kind in the sources table; each kind-specific key's row naming exactly the kinds
    that take it, with their presets; each kind's selectors under `Selectors for kind`."""
    problems = []
    kinds_text = "\n".join(s.body for s in headed(sections, SOURCES_HEADING))
    kinds_listed = {row[0] for row in table_rows(kinds_text)}
    option_rows = [row for s in headed(sections, KIND_SPECIFIC_HEADING)
                   for row in table_rows(s.body)]
    for kind, adapter in ADAPTERS.items():
        if f"`{kind}`" not in kinds_listed:
            problems.append(f"source kind `{kind}`: no row in the '{SOURCES_HEADING}' table")
        selectors = "\n".join(s.text for s in sections
                              if re.search(rf"Selectors for `{re.escape(kind)}`", s.heading))
        for selector in adapter.selector_keys:
            if f"`{selector}`" not in selectors:
                problems.append(f"kind `{kind}`: selector `{selector}` is not under "
                                f"a heading 'Selectors for `{kind}`'")
    for key in sorted(KIND_SPECIFIC_KEYS):
        rows = [row for row in option_rows if names_key(row[0], key)]
        if not rows:
            problems.append(f"target key `{key}`: no row under '{KIND_SPECIFIC_HEADING}'")
            continue
        row_text = " ".join(" ".join(row[1:]) for row in rows)
        named = {kind for kind in ADAPTERS if f"`{kind}`" in row_text}
        taking = {kind for kind, adapter in ADAPTERS.items() if key in adapter.option_keys}
        for kind in sorted(taking - named):
            problems.append(f"target key `{key}`: kind `{kind}` takes it; its row does not say so")
        for kind in sorted(named - taking):
            problems.append(f"target key `{key}`: its row names kind `{kind}`, which does not "
                            f"take it")
        if key == "preset":
            for kind in sorted(taking):
                for preset in ADAPTERS[kind].presets:
                    if f"`{preset}`" not in row_text:
                        problems.append(f"kind `{kind}`: preset `{preset}` is not in the "
                                        f"`preset` row")
    return problems


# --- the tests -----------------------------------------------------------------------


def _report(problems: list[str]) -> str:
    return "undocumented (add it to docs/):\n" + "\n".join(problems)


def test_every_command_and_option_is_documented() -> None:
    problems = missing_commands(cli_root(), all_sections())
    assert not problems, _report(problems)


def test_every_json_output_is_documented() -> None:
    problems = missing_json_contracts(cli_root(), all_sections())
    assert not problems, _report(problems)


def test_every_config_key_is_documented() -> None:
    problems = missing_config_keys(all_sections())
    assert not problems, _report(problems)


def test_every_source_kind_option_preset_and_selector_is_documented() -> None:
    problems = missing_kind_options(all_sections())
    assert not problems, _report(problems)


def test_every_schema_table_has_a_section() -> None:
    unplaced = sorted(set(schema_tables()) - set(SCHEMA_SECTIONS))
    assert unplaced == [], ("tables of keys in monitor/config.py that this test does not "
                            "know the docs heading of; add them to SCHEMA_SECTIONS")
    assert schema_tables().keys() >= SCHEMA_SECTIONS.keys(), "a table named here is gone"


def _without(sections: list[Section], heading_marker: str, drop: str) -> list[Section]:
    """The pages with `drop` removed from the sections headed by `heading_marker`."""
    return [replace(s, body=s.body.replace(drop, "")) if s in headed(sections, heading_marker)
            else s for s in sections]


def test_the_checks_name_what_is_missing() -> None:
    """Against the real pages with one thing cut out, each check names that thing; so a
    passing check above means the thing is there, not that the check looks nowhere."""
    sections = all_sections()
    cut = _without(sections, "weightwatch scan", "--max-bytes")
    assert any("`weightwatch scan`: option --max-bytes" in p
               for p in missing_commands(cli_root(), cut))
    cut = [s for s in sections if not headed([s], "weightwatch silence expire")]
    assert any(p.startswith("`weightwatch silence expire`: no heading")
               for p in missing_commands(cli_root(), cut))
    cut = [s for s in sections
           if not (s.path == JSON_PAGE and headed([s], "weightwatch rematch"))]
    assert missing_json_contracts(cli_root(), cut) == [
        "`weightwatch rematch --format json`: no heading `weightwatch rematch` in "
        "docs/json-output.md"]
    cut = _without(sections, "[scan]", "`max_links`")
    assert any(p.startswith("config key `scan.max_links`") for p in missing_config_keys(cut))
    cut = _without(sections, "[[alerts.routes]]", "`kind`")
    assert any(p.startswith("config key `alerts.routes.kind`")
               for p in missing_config_keys(cut))
    cut = _without(sections, KIND_SPECIFIC_HEADING, "`lemmy`")
    assert "target key `max_pages`: kind `lemmy` takes it; its row does not say so" in \
        missing_kind_options(cut)
    cut = _without(sections, "forum", "`thread_title`")
    assert any("selector `thread_title`" in p for p in missing_kind_options(cut))


def _setup_commands() -> list[str]:
    (setup,) = [s for s in read_sections(README) if s.heading == "Set up"]
    blocks = re.findall(r"```sh\n(.*?)```", setup.body, re.S)
    assert blocks, "README's 'Set up' has no ```sh block"
    return [line for line in blocks[0].splitlines() if line.strip() and
            not line.lstrip().startswith("#")]


def test_readme_setup_commands_are_the_demo_and_ci_commands() -> None:
    demo, tests = _setup_commands()
    assert demo == DEMO_COMMAND
    assert "demo" in cli_root().commands
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert tests in ci_lines, ".ci/run must run the README's test command, character for " \
                              "character, on one line"
    assert "pytest" in tests


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.lower())
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    anchors = set()
    for section in read_sections(path)[1:]:
        slug = _slug(section.heading)
        anchors.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
        seen[slug] = seen.get(slug, 0) + 1
    return anchors


@pytest.mark.parametrize("page", LINKED_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_reach_a_page_and_heading(page: Path) -> None:
    if not page.exists():
        pytest.fail(f"{page.relative_to(ROOT)} is missing")
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue  # an absolute URL: not checked (no network)
        file_part, _, anchor = target.partition("#")
        linked = (page.parent / file_part).resolve() if file_part else page
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
            broken.append(f"{target}: no heading with that anchor")
    assert not broken, f"{page.relative_to(ROOT)}: broken links:\n" + "\n".join(broken)
