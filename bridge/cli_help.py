"""How the ``worldweave`` subcommands show their help in a terminal.

Module docstrings double as ``--help`` descriptions, so their reStructuredText code marks (double backticks) are
dropped here: a marked flag shows bare, marked text with spaces in single quotes. Every option that takes a value
states its default, whether or not its help text does.
"""

from __future__ import annotations

import argparse
import importlib
import re
from types import ModuleType

_CODE_MARK = re.compile(r"``([^`]+)``")


def plain(text: str) -> str:
    """``text`` with reStructuredText's double-backtick code marks removed (quoted where the code has spaces)."""
    return _CODE_MARK.sub(lambda m: f"'{m.group(1)}'" if " " in m.group(1) else m.group(1), text)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and epilogs keep their line breaks and lose code marks; each optional option's help ends with
    its default ("none" for an unset path or list) unless the help already states one."""

    def _format_text(self, text: str) -> str:
        return super()._format_text(plain(text))

    def _get_help_string(self, action: argparse.Action) -> str:
        text = plain(action.help or "")
        takes_value = action.nargs != 0 and action.option_strings
        if not takes_value or action.required or action.default is argparse.SUPPRESS or "default" in text:
            return text
        shown = "%(default)s" if action.default not in (None, [], "") else "none"
        return f"{text} (default: {shown})"


def module_parser(prog: str, module: ModuleType, summary: str) -> argparse.ArgumentParser:
    """The parser of a subcommand module (one with ``add_arguments(parser)`` and ``run(args)``): its docstring, else
    ``summary``, as the description, and its arguments."""
    parser = argparse.ArgumentParser(prog=prog, description=module.__doc__ or summary, formatter_class=HelpFormatter)
    module.add_arguments(parser)
    return parser


class KindRouter:
    """A subcommand with kinds (``worldweave eval KIND``, ``worldweave train KIND``): ``kinds`` maps each kind to
    (its module, a one-line summary); a kind's module defines ``add_arguments(parser)`` and ``run(args) -> int`` and is
    imported only when that kind runs, so the router's ``--help`` stays fast."""

    def __init__(self, command: str, kinds: dict[str, tuple[str, str]], what: str) -> None:
        self.command, self.kinds, self.what = command, kinds, what

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        listed = "\n".join(f"  {name:<12} {summary}" for name, (_, summary) in self.kinds.items())
        parser.epilog = f"kinds:\n{listed}\n\n'worldweave {self.command} KIND --help' describes each."
        parser.add_argument("kind", choices=sorted(self.kinds), metavar="KIND", help=f"{self.what} (see below)")
        parser.add_argument("options", nargs=argparse.REMAINDER, help="the kind's own arguments")

    def run(self, args: argparse.Namespace) -> int:
        module_name, summary = self.kinds[args.kind]
        module = importlib.import_module(module_name)
        parser = module_parser(f"worldweave {self.command} {args.kind}", module, summary)
        return int(module.run(parser.parse_args(args.options)) or 0)
