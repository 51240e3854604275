"""The ``tunelab`` command: the web app, training, run folders, inference and the Hub from a shell.

A thin layer over the library: recipes run through ``accelerate launch`` (never imported), runs are read
through ``tunelab.runs``, inference goes through ``tunelab.infer`` and pushes through ``tunelab.hub``.
Heavy imports (torch, transformers, gradio) happen inside the subcommand that needs them, so ``--help``
and ``tunelab runs list`` answer at once.

One module per command group, each with its ``register(commands)`` beside the functions that run it:
``app``, ``train``, ``sweep``, ``runs``, ``infer`` (classify, generate, chat), ``export``, ``hub`` (push);
``common`` holds what they share.

Errors a user can cause print one line (``error: ...``) and exit non-zero; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import os
import sys

import tunelab
from tunelab.errors import ConfigError, TuneLabError

from . import app, export, hub, infer, runs, sweep, train
from .common import CliError, Formatter, common_options
from .train import resolved_config

__all__ = ["CliError", "build_parser", "main", "resolved_config"]
COMMAND_GROUPS = (app, train, sweep, runs, infer, export, hub)  # in the order `tunelab --help` lists them


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tunelab",
        description="TuneLab: fine-tune and train transformer models with the Hugging Face stack.\n"
        "Every command works on run folders (default ./runs or $TUNELAB_RUNS_DIR), shared with the web app.",
        epilog="examples:\n"
        "  tunelab app                                   # the web app on http://127.0.0.1:7860\n"
        "  tunelab train cls --train_file reviews.csv    # fine-tune MiniLM on a labelled csv\n"
        "  tunelab runs list\n"
        '  tunelab classify latest "what a wonderful film"\n'
        "  tunelab push latest --repo-id me/my-classifier\n\n"
        "`tunelab COMMAND --help` tells more about each command.",
        formatter_class=Formatter,
        parents=[common_options(debug_default=False)],
    )
    parser.add_argument("--version", action="version", version=f"tunelab {tunelab.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")

    for group in COMMAND_GROUPS:
        group.register(commands)
    return parser


def error_message(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        where = f": {error.filename}" if error.filename else ""
        return f"{error.strerror[0].lower()}{error.strerror[1:]}{where}"
    return str(error) or type(error).__name__


def joined_sbatch_args(argv: list[str]) -> list[str]:
    """``--sbatch-arg --qos=high`` as ``--sbatch-arg=--qos=high`` (argparse takes a value that looks
    like an option only in the joined form)."""
    out: list[str] = []
    items = iter(argv)
    for item in items:
        out.append(f"{item}={next(items, '')}" if item == "--sbatch-arg" else item)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(joined_sbatch_args(sys.argv[1:] if argv is None else list(argv)))
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    if extra and not getattr(args, "accepts_recipe_args", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.recipe_args = extra
    if args.quiet:
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("TQDM_DISABLE", "1")
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `tunelab runs list | head`: the reader left; stay quiet like other Unix tools.
        sys.stderr.close()
        return 0
    except (TuneLabError, OSError, ConfigError) as error:
        if args.debug:
            raise
        print(f"error: {error_message(error)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
