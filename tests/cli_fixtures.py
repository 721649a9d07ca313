"""Runs a command-line entry point in-process, as the tests of every CLI do."""

from __future__ import annotations

import importlib.util
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def load_script(relative_path: str):
    """Imports a script that is not in a package (e.g. "benchmarks/report.py") as a new
    module object (each call loads it afresh)."""
    path = ROOT / relative_path
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
