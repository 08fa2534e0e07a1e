"""The one exception type a user sees, and the CLI wrapper that turns it into a clear line."""

import sys


class SpartanError(Exception):
    """A problem with the user's input or files: printed as one line, exit code 2."""


def run_cli(main, argv=None) -> int:
    """Run ``main(argv)``; a SpartanError becomes ``error: ...`` on stderr and exit code 2."""
    try:
        main(argv)
    except SpartanError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:
        print(f"interrupted{': ' + str(interrupt) if str(interrupt) else ''}", file=sys.stderr)
        return 130
    return 0
