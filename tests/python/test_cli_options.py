"""Issue 16: each `lwfm` command's help and its parser come from one option
table (tools/cli/cmd_<name>.c), so they cannot disagree. These tests prove it
from the outside, for every command `lwfm --help` lists:

- every option `lwfm help CMD` lists is accepted by the parser, with its
  value (`--name V`, `--name=V`) or without (a flag), and a flag refuses a
  value;
- every other option name the project mentions (the help of any command,
  docs/cli.md, the string literals of tools/cli/*.c) is refused by CMD's
  parser: the parser accepts nothing its help does not list;
- `lwfm help CMD`, `lwfm CMD --help` and `lwfm CMD -h` print the same help;
- the synopsis at the top of docs/cli.md names the same options per command.

No model is loaded: `--help` ends the parse once the options before it are
read. Run by the meson test `cli` (LWFM_CLI)."""
import re

import pytest

from conftest import ROOT
from test_cli import cli, run  # noqa: F401 (fixture)

OPTION_LINE = re.compile(r"^  (--[a-z0-9][a-z0-9-]*)(?: (\S+))?(?:  |$)")
OPTION_NAME = re.compile(r"--[a-z][a-z0-9]*(?:-[a-z0-9]+)*")


def commands(cli):
    out = run(cli, "--help", check=0).stdout
    block = out.split("Commands:\n", 1)[1].split("\n\n", 1)[0]
    names = [line.split()[0] for line in block.splitlines()]
    assert names, out
    return names


def help_options(text):
    """{option: its value's name, or None for a flag}, from the option lines
    of a command's help (two spaces, then the option)."""
    opts = {}
    for line in text.splitlines():
        m = OPTION_LINE.match(line)
        if m:
            assert m.group(1) not in opts, f"{m.group(1)} listed twice"
            opts[m.group(1)] = m.group(2)
    return opts


def mentioned_options(cli, names):
    """Every option name in the helps, docs/cli.md and tools/cli/*.c."""
    texts = [run(cli, "help", n, check=0).stdout for n in names]
    texts.append((ROOT / "docs" / "cli.md").read_text())
    for src in sorted((ROOT / "tools" / "cli").glob("*.c")):
        texts += re.findall(r'"((?:[^"\\\n]|\\.)*)"', src.read_text())
    found = set()
    for t in texts:
        found.update(OPTION_NAME.findall(t))
    return found - {"--help"}


@pytest.fixture(scope="module")
def helps(cli):
    return {n: run(cli, "help", n, check=0).stdout for n in commands(cli)}


def test_every_command_has_help(cli, helps):
    assert set(helps) >= {"info", "classify", "eval", "bench"}
    for name, text in helps.items():
        assert text.startswith(f"Usage: lwfm {name} "), text
        assert run(cli, name, "--help", check=0).stdout == text
        assert run(cli, name, "-h", check=0).stdout == text
        assert help_options(text), f"no options in the help of {name}"


def test_parser_accepts_what_help_lists(cli, helps):
    for name, text in helps.items():
        for opt, arg in help_options(text).items():
            if arg is None:  # a flag: no value
                res = run(cli, name, opt, "--help")
                assert res.returncode == 0 and res.stdout == text, (name, opt, res.stderr)
                res = run(cli, name, f"{opt}=1", "--help")
                assert res.returncode == 2 and "unexpected argument" in res.stderr, (name, opt)
                continue
            for args in ([f"{opt}=v"], [opt, "v"]):
                res = run(cli, name, *args, "--help")
                assert res.returncode == 0 and res.stdout == text, (name, args, res.stderr)
            res = run(cli, name, opt)  # the value missing
            assert res.returncode == 2 and opt in res.stderr, (name, opt, res.stderr)


def test_parser_refuses_what_help_does_not_list(cli, helps):
    candidates = mentioned_options(cli, list(helps))
    assert {"--model", "--way", "--support", "--reps"} <= candidates
    for name, text in helps.items():
        listed = set(help_options(text))
        for opt in sorted(candidates - listed):
            for arg in (opt, f"{opt}=v"):
                res = run(cli, name, arg, "--help")
                assert res.returncode == 2, (name, arg, "accepted but not in the help")
                assert f"unexpected argument '{arg}'" in res.stderr, (name, arg, res.stderr)


def test_docs_synopsis_names_the_same_options(cli, helps):
    """The ``` block at the top of docs/cli.md: `lwfm CMD ...` lines (and
    their continuation lines) name exactly the options of CMD's help."""
    doc = (ROOT / "docs" / "cli.md").read_text()
    block = doc.split("```\n", 2)[1]
    synopsis, current = {}, None
    for line in block.splitlines():
        m = re.match(r"lwfm (\w+) ", line)
        if m and m.group(1) in helps:
            current = m.group(1)
        elif not line.startswith(" "):
            current = None
        if current:
            synopsis.setdefault(current, set()).update(OPTION_NAME.findall(line))
    for name, text in helps.items():
        assert synopsis.get(name, set()) == set(help_options(text)), name
