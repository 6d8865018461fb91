"""The CLI's parser imports only the module of the command being run (cli.COMMAND_MODULES): `threadline import`
does not pay for graphql-core and the other commands' packages, and every command stays reachable."""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys

from threadline import cli


def _commands(parser: argparse.ArgumentParser) -> list[str]:
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return list(sub.choices)


def test_the_table_names_every_command_of_every_module() -> None:
    everything = _commands(cli.build_parser(everything=True))
    assert sorted(everything) == sorted([*cli.BUILT_IN, *cli.COMMAND_MODULES])
    for module in dict.fromkeys(cli.COMMAND_MODULES.values()):
        parser = argparse.ArgumentParser()
        sub = parser.add_subparsers(dest="command")
        importlib.import_module(module).add_commands(sub)
        assert sorted(_commands(parser)) == sorted(c for c, m in cli.COMMAND_MODULES.items() if m == module)


def test_each_command_gets_its_own_module_and_help_gets_them_all() -> None:
    assert _commands(cli.build_parser(["import", "f.json", "--format", "chatgpt"])) == [
        *cli.BUILT_IN,
        "import",
        "export",
    ]
    assert _commands(cli.build_parser(["serve", "--port", "1"])) == list(cli.BUILT_IN)
    assert _commands(cli.build_parser(["keys", "status"]))[-1] == "keys"
    everything = _commands(cli.build_parser(everything=True))
    for argv in ([], ["--help"], ["nosuchcommand"]):
        assert _commands(cli.build_parser(argv)) == everything
    args = cli.build_parser(["documents", "register", "m.json"]).parse_args(
        ["documents", "register", "m.json"]
    )
    assert args.command == "documents"


def test_threadline_import_does_not_import_the_other_commands_packages() -> None:
    probe = (
        "import sys\n"
        "from threadline.cli import build_parser\n"
        "sys.argv = ['threadline', 'import', 'f.json', '--format', 'chatgpt']\n"
        "build_parser().parse_args()\n"
        "print(sorted(m for m in ('graphql', 'threadline.documents.commands', 'threadline.tiers.commands') "
        "if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
