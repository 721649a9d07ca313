"""Runs a command-line entry point in-process, as the tests of every CLI do."""

from __future__ import annotations


def run_main(main, args, capsys) -> tuple[int, str, str]:
    """Calls main(argv) with `args` as strings; returns (exit code, stdout, stderr), where an
    argparse exit (SystemExit) counts as the exit code."""
    capsys.readouterr()
    try:
        code = main([str(a) for a in args])
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err
