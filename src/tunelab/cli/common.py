"""What every `tunelab` command shares: one-line errors, messages on stderr, finding runs, tables, and
the pieces of each command's parser (common options, --runs-dir, help formatting)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import tunelab
from tunelab.errors import TuneLabError

STOP_GRACE_S = 60.0  # tunelab.launch.STOP_GRACE_S, without importing the launcher for --help


class CliError(TuneLabError):
    """A wrong use of the command itself (unknown run, missing file, ...)."""


def info(args: argparse.Namespace, message: str) -> None:
    """Progress and status lines go to stderr (stdout stays clean for pipes); --quiet hides them."""
    if not getattr(args, "quiet", False):
        print(message, file=sys.stderr, flush=True)


def project_root(needs: str) -> Path:
    """The source tree that holds ``recipes/`` and ``app/``: they sit beside the package, not inside it.

    An editable/source install finds it from the package's own location; a plain ``pip install .``
    needs ``TUNELAB_ROOT`` (the Docker images use an editable install, so neither is needed there).
    """
    candidates = [os.environ.get("TUNELAB_ROOT"), Path(tunelab.__file__).resolve().parents[2], Path.cwd()]
    for candidate in candidates:
        if candidate and (Path(candidate) / needs).exists():
            return Path(candidate)
    raise CliError(
        f"cannot find TuneLab's {needs} (it lives in the source tree, not in the installed package): "
        "install from a checkout with `pip install -e .`, or set TUNELAB_ROOT to the checkout"
    )


def default_runs_dir() -> Path:
    """``tunelab.args.default_runs_dir`` without importing it: tunelab.args imports transformers (seconds),
    which `tunelab runs list` must not wait for. tests/test_cli.py checks that the two agree."""
    return Path(os.environ.get("TUNELAB_RUNS_DIR", "runs"))


def runs_dir_of(args: argparse.Namespace) -> Path:
    return Path(args.runs_dir) if getattr(args, "runs_dir", None) else default_runs_dir()


def format_time(stamp: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(stamp)) if stamp else "-"


def format_duration(seconds: float | None) -> str:
    if seconds is None or seconds < 0:
        return "-"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def print_table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def find_run(spec: str, runs_dir: Path, required: bool = True):
    """A run by folder path, id in the runs dir, unique id prefix, or ``latest``."""
    from tunelab.runs import STATUS_FILE, Run, list_runs

    path = Path(spec).expanduser()
    if (path / STATUS_FILE).is_file():
        return Run(path)
    if (runs_dir / spec / STATUS_FILE).is_file():
        return Run(runs_dir / spec)
    runs = list_runs(runs_dir)
    if spec == "latest" and runs:
        return runs[0]
    matches = [r for r in runs if r.id.startswith(spec)] if spec and "/" not in spec else []
    if len(matches) == 1:
        return matches[0]
    if not required:
        return None
    if len(matches) > 1:
        raise CliError(f"run {spec!r} is ambiguous in {runs_dir}: {', '.join(r.id for r in matches[:5])}")
    raise CliError(f"no run {spec!r} in {runs_dir} (`tunelab runs list --runs-dir DIR` shows the runs)")


def refreshed(run) -> dict[str, Any]:
    """The run's status, settled against its processes or cluster job (a killed run is marked failed)."""
    from tunelab.launch import refresh

    return refresh(run)


# ---- parsers -------------------------------------------------------------------------------------


class Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples' line breaks and shows defaults."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        flag = isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction))
        if (
            "default" not in text
            and not flag
            and action.default not in (None, argparse.SUPPRESS)
            and action.option_strings
        ):
            text += " (default: %(default)s)"
        return text


def common_options(debug_default: Any = argparse.SUPPRESS) -> argparse.ArgumentParser:
    """--debug and --quiet, accepted before or after the subcommand."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--debug", action="store_true", default=debug_default, help="show the full traceback of an error"
    )
    parent.add_argument(
        "--quiet",
        "-q",
        action="store_true",
        default=debug_default,
        help="no progress messages or progress bars",
    )
    return parent


def runs_dir_option(parser: argparse.ArgumentParser) -> None:
    # SUPPRESS: `tunelab runs --runs-dir D show X` and `tunelab runs show X --runs-dir D` both work.
    parser.add_argument(
        "--runs-dir",
        metavar="DIR",
        default=argparse.SUPPRESS,
        help="folder of run folders (default: $TUNELAB_RUNS_DIR, else ./runs)",
    )


def add_command(subparsers: Any, name: str, summary: str, description: str, examples: str, **kwargs: Any):
    parser = subparsers.add_parser(
        name,
        help=summary,
        description=description,
        parents=[common_options()],
        epilog="examples:\n" + examples,
        formatter_class=Formatter,
        **kwargs,
    )
    return parser
