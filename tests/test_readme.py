"""The README and the pages in docs/ tell the truth about the scripts: every `python
<script>.py ...` command they show names a script that exists and only flags its --help
lists, every default they state is the parser's, and every figure and page they link to is
there. The README stays short enough to read in five minutes."""

import os
import re
import shlex
from functools import cache
from types import SimpleNamespace

import pytest

from tests.helpers import ROOT, call_script

README = "README.md"
PAGES = [README] + sorted(
    os.path.join("docs", name) for name in os.listdir(os.path.join(ROOT, "docs")) if name.endswith(".md")
)
FIGURE_MAKER = os.path.join("docs", "make_figures.sh")  # its commands are checked as the pages' are
# The studies hand every flag they do not define on to train.py (their --help says so).
PASSED_ON = {"ablation.py": "train.py", "transfer.py": "train.py"}
# What ends one shell command on a line and starts the next.
SEPARATORS = {"&&", "||", ";", "|", ">", ">>", "<"}
# A default stated in prose: `--flag` (default: X), `sub-command --flag` (default: X) or
# `script.py --flag` (default: X).
PROSE_DEFAULT = re.compile(r"`(?:([\w.-]+) )?(--[\w-]+)`\s*\(default:\s+([^)]*)\)")


def read(page):
    with open(os.path.join(ROOT, page), encoding="utf-8") as file:
        return file.read().splitlines()


def command_lines(page):
    """(line number, text) of every shell line in the page's code blocks (of every line, in a
    shell script), continuation lines joined, and of every inline code span that starts with
    `python `."""
    lines, fenced, pending = [], page.endswith(".sh"), None
    for number, line in enumerate(read(page), 1):
        if line.startswith("```"):
            fenced = not fenced
        elif fenced:
            start, text = pending or (number, "")
            text += line.rstrip("\\")
            pending = (start, text) if line.endswith("\\") else None
            if pending is None:
                lines.append((start, text))
        else:
            lines += [(number, span) for span in re.findall(r"`(python [^`]+)`", line)]
    return lines


def python_commands(text):
    """Each (script, arguments) that `text` runs with python or torchrun."""
    tokens = shlex.split(text, comments=True)
    commands = []
    for index, token in enumerate(tokens):
        if token not in ("python", "python3", "torchrun"):
            continue
        rest = tokens[index + 1 :]
        while token == "torchrun" and rest and rest[0].startswith("-"):  # its own options come first
            rest = rest[1:]
        if not rest or not rest[0].endswith(".py"):
            continue  # python -c ..., python -m ...
        arguments = []
        for word in rest[1:]:
            if word in SEPARATORS:
                break
            arguments.append(word)
        commands.append((rest[0], arguments))
    return commands


def shown_commands():
    commands = []
    for page in PAGES + [FIGURE_MAKER]:
        for number, text in command_lines(page):
            for script, arguments in python_commands(text):
                commands.append(
                    SimpleNamespace(page=page, line=number, text=text.strip(), script=script, arguments=arguments)
                )
    return commands


def section_script(heading):
    """The script a heading is about (`### train.py` -> train.py), or None."""
    found = re.search(r"([\w/]+\.py)", heading)
    return found.group(1) if found else None


def stated_defaults(page):
    """Each default the page states for a flag, in a table with `flag` and `default` columns
    or as `--flag` (default: X) in prose, with the script whose section states it."""
    statements, script, columns, fenced = [], None, None, False
    lines = read(page)
    for number, line in enumerate(lines, 1):
        if line.startswith("```"):
            fenced = not fenced
        if fenced or line.startswith("```"):  # commands, not statements
            continue
        if line.startswith("#"):
            script = section_script(line)
        if not line.startswith("|"):
            columns = None
        else:
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            if columns is None and "flag" in cells and "default" in cells:
                columns = cells.index("flag"), cells.index("default")
            elif columns is not None and not set(line) <= set("|-: "):
                flags = re.findall(r"--[\w-]+", cells[columns[0]])
                stated = cells[columns[1]].strip("` ")
                if stated:
                    assert len(flags) == 1, f"{page}:{number}: state one flag's default per row"
                    statements.append(
                        SimpleNamespace(
                            page=page, line=number, script=script, command=None, flag=flags[0], stated=stated
                        )
                    )
        # A statement may wrap onto the next line; each is counted on the line it starts on.
        text = " ".join([line] + lines[number : number + 1])
        for found in PROSE_DEFAULT.finditer(text):
            if found.start() >= len(line):
                continue
            prefix, flag, stated = found.groups()
            named = bool(prefix) and prefix.endswith(".py")
            statements.append(
                SimpleNamespace(
                    page=page,
                    line=number,
                    script=prefix if named else script,
                    command=None if named else prefix,
                    flag=flag,
                    stated=" ".join(stated.split()).strip("` "),
                )
            )
    return statements


@cache
def help_text(script, command=None):
    """The script's (or its sub-command's) --help, one line per flag so that no default is
    wrapped. Cached: each help is asked for once."""
    columns = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "1000"
    try:
        result = call_script(script, *([command] if command else []), "--help")
    finally:
        if columns is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = columns
    assert result.returncode == 0, result.stderr
    return result.stdout


@cache
def parser_defaults(script, command=None):
    """{flag: the default its --help states (without a note after a semicolon), or None} of
    the script or sub-command."""
    options = help_text(script, command).split("\noptions:\n", 1)[1].split("\n\n")[0]
    flags = {}
    for block in re.split(r"\n(?=  -)", options):
        invocation = block.strip().split("  ")[0]
        default = re.search(r"\(default: (.*)\)$", " ".join(block.split()))
        for flag in re.findall(r"--[\w-]+", invocation):
            flags[flag] = default.group(1).split("; ")[0] if default else None
    return flags


def sub_commands(script):
    """The sub-commands the script offers (visualize.py's top9, ...), or []."""
    found = re.search(r"^  \{([\w,-]+)\}", help_text(script), re.MULTILINE)
    return found.group(1).split(",") if found else []


def flags_of(script, command):
    """Every flag the script (or sub-command) accepts, with those it passes on to another."""
    flags = dict(parser_defaults(script, command))
    if script in PASSED_ON:
        flags = {**parser_defaults(PASSED_ON[script]), **flags}
    return flags


COMMANDS = shown_commands()
DEFAULTS = [statement for page in PAGES for statement in stated_defaults(page)]


def where(item):
    return f"{item.page}:{item.line}"


def test_the_pages_show_commands_and_defaults():
    # Guards the parsing above: a page format it no longer reads would otherwise pass silently.
    assert len([command for command in COMMANDS if command.page == README]) >= 25
    assert len([statement for statement in DEFAULTS if statement.page == README]) >= 20
    assert len([command for command in COMMANDS if command.page == FIGURE_MAKER]) >= 8


def test_the_readme_shows_every_script():
    scripts = {name for name in os.listdir(ROOT) if name.endswith(".py") and name != "model.py"}
    shown = {command.script for command in COMMANDS if command.page == README}
    assert scripts <= shown, f"scripts the README never runs: {sorted(scripts - shown)}"


def test_the_readme_is_short():
    assert len(read(README)) < 250


@pytest.mark.parametrize("command", COMMANDS, ids=lambda command: f"{where(command)} {command.text}")
def test_every_command_uses_flags_its_script_has(command):
    assert os.path.isfile(os.path.join(ROOT, command.script)), f"{where(command)}: no {command.script}"
    arguments, sub_command = command.arguments, None
    offered = sub_commands(command.script)
    if offered:
        sub_command = arguments[0] if arguments else None
        assert sub_command in offered, f"{where(command)}: {command.script} needs one of {offered}"
    known = flags_of(command.script, sub_command)
    used = [argument.split("=")[0] for argument in arguments if argument.startswith("--")]
    unknown = [flag for flag in used if flag not in known]
    name = " ".join(filter(None, (command.script, sub_command)))
    assert not unknown, f"{where(command)}: {name} has no {unknown}"


@pytest.mark.parametrize("statement", DEFAULTS, ids=lambda statement: f"{where(statement)} {statement.flag}")
def test_every_stated_default_is_the_parsers(statement):
    assert statement.script, f"{where(statement)}: a default stated outside a script's section"
    if sub_commands(statement.script):
        assert statement.command, f"{where(statement)}: name the sub-command, e.g. `top9 {statement.flag}`"
    flags = flags_of(statement.script, statement.command)
    assert statement.flag in flags, f"{where(statement)}: {statement.script} has no {statement.flag}"
    assert flags[statement.flag] == statement.stated, (
        f"{where(statement)}: {statement.script} {statement.flag} defaults to {flags[statement.flag]!r}, "
        f"the page says {statement.stated!r}"
    )


def slug(heading):
    """The anchor GitHub gives a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.lstrip("#").strip().lower())
    return text.replace(" ", "-")


@pytest.mark.parametrize("page", PAGES)
def test_links_and_figures_exist(page):
    for number, line in enumerate(read(page), 1):
        for target, anchor in re.findall(r"\]\(([^)#\s]*)(?:#([^)\s]*))?\)", line):
            if target.startswith(("http://", "https://")):
                continue
            path = os.path.normpath(os.path.join(os.path.dirname(page), target)) if target else page
            assert os.path.exists(os.path.join(ROOT, path)), f"{page}:{number}: {target} does not exist"
            if anchor:
                headings = [slug(text) for text in read(path) if text.startswith("#")]
                assert anchor in headings, f"{page}:{number}: {path} has no heading #{anchor}"
