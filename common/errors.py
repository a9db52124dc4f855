"""User-facing errors: one clear line on stderr and a non-zero exit, never a traceback."""
from __future__ import annotations

import sys
from typing import Callable, Sequence

# Exit status for bad input (argparse uses 2 for usage errors too).
EXIT_USER_ERROR = 2


class UserError(Exception):
    """Something the user can fix: bad flag, missing file, mismatched checkpoint.

    The message is one line saying what was wrong and how to fix it.
    """


def run_cli(main: Callable[[Sequence[str] | None], object], argv: Sequence[str] | None = None) -> None:
    """Run a CLI entry point, turning a UserError into `error: ...` and exit status 2."""
    try:
        main(argv)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
