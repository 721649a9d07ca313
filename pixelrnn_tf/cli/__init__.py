"""The command-line entry points (`train`, `export`, `sample`, `demo`) and what they share:
bad flags give one line and exit status 2 (`ArgumentParser`); a known problem gives one line
"PROG: error: ..." and exit status 1, never a traceback (`run_command`).

`train.py` and `export.py` at the top of the repository, `python -m data_prep` and the
console scripts all enter here.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import NamedTuple

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT
EXIT_PREEMPTED = 143  # 128 + SIGTERM: stopped cleanly after saving a checkpoint


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


def first_line(error: BaseException) -> str:
    """The first line of an exception's message, or its type name when it has none."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def error_line(error: BaseException) -> str:
    return f"error: {error}"


def tensorflow_error_line(error) -> str:
    """A tf.errors.OpError (e.g. a shard found corrupt while reading): its first line."""
    return f"error: {error.message.strip().splitlines()[0]}"


def unexpected_error_line(error: BaseException) -> str:
    return f"error: {type(error).__name__}: {first_line(error)}"


class Failure(NamedTuple):
    """How `run_command` reports one kind of exception: "PROG: " + line(exception) on stderr
    and `exit_code`."""

    types: type | tuple[type, ...]
    line: Callable[[BaseException], str] = error_line
    exit_code: int = EXIT_ERROR


def run_command(prog: str, command: Callable[[], int], failures: list[Failure],
                interrupted: str = "interrupted") -> int:
    """Runs command() and returns its exit status.

    An exception of one of `failures` (the first that matches) is reported as one line and
    exits with that failure's status; Ctrl-C prints "PROG: <interrupted>" and exits 130;
    anything else propagates.
    """
    try:
        return command()
    except KeyboardInterrupt:
        print(f"{prog}: {interrupted}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:
        for failure in failures:
            if isinstance(e, failure.types):
                print(f"{prog}: {failure.line(e)}", file=sys.stderr)
                return failure.exit_code
        raise
