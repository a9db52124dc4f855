"""The one command-line convention every program here follows.

A bad flag or value is one line on stderr, `error: ... (see --help)`, and exit status 2, never
argparse's usage block or a traceback; a bug in our own code keeps its traceback. Programs
build their flags on `Parser` and run their `main` through `common.errors.run_cli`:

    parser = Parser(prog="python -m benchmarks.speed", description=__doc__)
    parser.add_argument("--rounds", type=int, default=5, help="rotations over all contenders")
    add_data_dir(parser)
"""
from __future__ import annotations

import argparse

from common.errors import UserError

DATA_DIR_HELP = "MNIST folder (default: $MNIST_DIR, else data/mnist in the working directory)"


class Parser(argparse.ArgumentParser):
    """argparse with errors raised as UserError (one line, exit status 2 through run_cli).

    `description` may be a whole module docstring: its first paragraph is used, so the help
    never stops mid-sentence at a line break."""

    def __init__(self, *args, description: str | None = None, **kwargs) -> None:
        if description:
            description = " ".join(description.strip().split("\n\n")[0].split())
        super().__init__(*args, description=description, **kwargs)

    def error(self, message: str):
        raise UserError(f"{message} (see --help)")


def add_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", default=None, metavar="DIR", help=DATA_DIR_HELP)
