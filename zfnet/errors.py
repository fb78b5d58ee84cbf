"""One exception type for "the user gave something wrong", and the wrapper every script's
entry point uses to turn it into a single line on stderr and exit status 2."""

import os
import sys


class UserError(Exception):
    """Bad input from the user (a missing file, an unknown class, a wrong flag value).

    Anything else that goes wrong is a bug and keeps its traceback."""


def report(message):
    """Print `prog: error: message` on stderr, as argparse does for bad flags."""
    print(f"{os.path.basename(sys.argv[0])}: error: {message}", file=sys.stderr)


_at_end = []


def at_end(function):
    """Have `run_main` call `function()` however the script ends (zfnet.outputs gives back the
    folders it locked)."""
    _at_end.append(function)


def run_main(main):
    """Call `main()`; report a UserError in one line and exit 2."""
    try:
        main()
    except UserError as error:
        report(error)
        sys.exit(2)
    except KeyboardInterrupt:
        print(f"{os.path.basename(sys.argv[0])}: interrupted", file=sys.stderr)
        sys.exit(130)
    finally:
        for function in _at_end:
            function()
