"""What every command-line entry point shares: bad flags give one line and exit status 2."""

from __future__ import annotations

import argparse

EXIT_USAGE = 2


class ArgumentParser(argparse.ArgumentParser):
    """`argparse.ArgumentParser` whose errors are one line ("prog: error: ... (see --help)")
    instead of the usage dump; sub-parsers made with `parser_class=ArgumentParser` too."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def positive_int(text: str) -> int:
    """argparse `type=` for integers >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value
