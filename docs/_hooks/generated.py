"""MkDocs hook: the pages' generated parts, made at build time from the data the code uses.

A page holds a marker line, ``<!-- generated: NAME -->``, and the build replaces it with
the text :data:`GENERATORS` makes for ``NAME``:

- ``settings``: every Celery setting, from ``celeriac._config.SETTINGS`` (implemented)
  and ``celeriac._settings_table.NOTES`` (accepted with the warning a process logs);
- ``cli``: every command and option of ``celeriac``, read from the click commands
  themselves, with the start-up warning of each worker option that means nothing here
  (``celeriac._cli.worker.NO_MEANING``);
- ``sqlite-schema``: the SQLite transport's migrations, in order;
- ``redis-layout``: the key layout comment heading the Redis scripts (``common.lua``);
- ``signals``: the signals of ``celeriac.signals``, and whether celeriac's code sends each.

So these tables cannot drift from the code: a setting added, moved from "warned" to
"implemented", or an option added, shows up at the next build. An unknown marker name
is an error.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

MARKER = re.compile(r"^<!-- generated: ([a-z-]+) -->$", re.MULTILINE)


def _cell(text: object) -> str:
    """Text fit for one Markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _code(value: object) -> str:
    text = repr(value)
    return f"`{_cell(text)}`" if "`" not in text else _cell(text)


def settings_table() -> str:
    """One row per setting: its name, Celery's old name, the default, what celeriac does."""
    from celeriac._config import SETTINGS
    from celeriac._settings_table import NOTES, OWN_SETTINGS, old_name

    names = sorted(set(SETTINGS) | set(NOTES))
    implemented = sum(1 for n in names if n in SETTINGS)
    lines = [
        f"{len(names)} settings: {implemented} implemented, "
        f"{sum(1 for n in names if n not in SETTINGS and NOTES[n][1].kind == 'not-yet')} "
        "not implemented yet (warned), the rest accepted with a warning that says what "
        "celeriac does instead. Generated from `celeriac._config.SETTINGS` and "
        "`celeriac._settings_table.NOTES` when this site was built.",
        "",
        "| setting | old name | default | what celeriac does |",
        "|---|---|---|---|",
    ]
    for name in names:
        old = old_name(name)
        old_text = f"`{old}`" if old else "(celeriac's own)"
        if name in SETTINGS:
            default = SETTINGS[name].default
            does = "**implemented**"
            if name in OWN_SETTINGS:
                does += " (celeriac's own setting; Celery has no such name)"
        else:
            default, note = NOTES[name]
            if note.kind == "not-yet":
                does = f"*not implemented yet*, warned: {name} {note.text}"
            else:
                does = f"accepted, warned: {note.text}"
            quiet = [q for q in note.quiet if q is not None]
            if quiet:
                does += " (no warning when set to " + ", ".join(_code(q) for q in quiet) + ")"
        lines.append(f"| `{name}` | {old_text} | {_code(default)} | {_cell(does)} |")
    return "\n".join(lines)


def _option_names(param: Any) -> str:
    names = [*param.opts, *param.secondary_opts]
    return ", ".join(f"`{n}`" for n in names)


def _command_rows(command: Any, warned: dict[str, str]) -> list[str]:
    import click

    rows = ["| option | what celeriac does |", "|---|---|"]
    for param in command.params:
        if not isinstance(param, click.Option) or param.hidden:
            continue
        if param.name in warned:
            does = f"accepted, warned at start-up: {warned[param.name]}"
        else:
            does = param.help or "as in Celery"
            if isinstance(param.type, click.Choice):
                does += " (one of: " + ", ".join(f"`{c}`" for c in param.type.choices) + ")"
        rows.append(f"| {_option_names(param)} | {_cell(does)} |")
    return rows


def cli_tables() -> str:
    """A table per command of ``celeriac``, from the click commands."""
    import click

    from celeriac._cli.worker import NO_MEANING
    from celeriac.cli import cli

    parts = [
        "Generated from the click commands of `celeriac.cli` when this site was built.",
        "",
        "### Global options (`celeriac [OPTIONS] COMMAND`)",
        "",
        *_command_rows(cli, {}),
    ]
    ctx = click.Context(cli)
    for name in sorted(cli.list_commands(ctx)):
        command = cli.get_command(ctx, name)
        if command is None:
            continue
        summary = (command.help or "").strip().splitlines()[0] if command.help else ""
        parts += ["", f"### `celeriac {name}`", ""]
        if summary:
            parts += [_cell(summary), ""]
        parts += _command_rows(command, NO_MEANING if name == "worker" else {})
    return "\n".join(parts)


def sqlite_schema() -> str:
    """Every migration of the SQLite transport, as one SQL block each."""
    folder = ROOT / "src" / "celeriac" / "transports" / "sqlite" / "sql" / "migrations"
    parts = []
    for path in sorted(folder.glob("*.sql")):
        parts += [
            f"`{path.name}`:",
            "",
            "```sql",
            path.read_text(encoding="utf-8").strip(),
            "```",
            "",
        ]
    return "\n".join(parts)


def redis_layout() -> str:
    """The leading comment of ``lua/common.lua``: the broker's keys."""
    path = ROOT / "src" / "celeriac" / "transports" / "redis" / "lua" / "common.lua"
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("--"):
            break
        lines.append(line[3:] if line.startswith("-- ") else line[2:])
    return "```text\n" + "\n".join(lines).strip() + "\n```"


def signals_table() -> str:
    """Each signal, and whether some module of celeriac sends it."""
    from celeriac import signals

    source = "\n".join(
        p.read_text(encoding="utf-8") for p in (ROOT / "src" / "celeriac").rglob("*.py")
    )
    rows = ["| signal | sent by celeriac |", "|---|---|"]
    for name, value in vars(signals).items():
        if isinstance(value, signals.Signal):
            sent = re.search(rf"\b{name}\.send\(", source) is not None
            rows.append(f"| `{name}` | {'yes' if sent else 'defined, not sent yet'} |")
    return "\n".join(rows)


GENERATORS: dict[str, Callable[[], str]] = {
    "settings": settings_table,
    "cli": cli_tables,
    "sqlite-schema": sqlite_schema,
    "redis-layout": redis_layout,
    "signals": signals_table,
}


def expand(markdown: str) -> str:
    """``markdown`` with every marker replaced by its generated text."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in GENERATORS:
            raise ValueError(f"unknown generated block {name!r}; known: {sorted(GENERATORS)}")
        return GENERATORS[name]()

    return MARKER.sub(replace, markdown)


def on_page_markdown(markdown: str, **_: Any) -> str:
    """MkDocs event: expand the markers of each page."""
    return expand(markdown)


#: a Sphinx role left in a rendered docstring (``:meth:`x```` renders as ``:meth:<code>``)
SPHINX_ROLE = re.compile(r":(?:py:)?(?:meth|func|class|data|mod|attr|exc|obj):(?=<code>)")


def on_page_content(html: str, **_: Any) -> str:
    """MkDocs event: drop the Sphinx role prefixes the docstrings use (the API pages)."""
    return SPHINX_ROLE.sub("", html)
