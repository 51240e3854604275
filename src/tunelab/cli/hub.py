"""`tunelab push`: a finished run's model files to the Hugging Face Hub."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import CliError, add_command, find_run, info, refreshed, runs_dir_of, runs_dir_option


def cmd_push(args: argparse.Namespace) -> int:
    from tunelab.hub import push_to_hub

    run = find_run(args.run, runs_dir_of(args), required=False)
    folder = run.path if run is not None else Path(args.run)
    if run is None and not folder.is_dir():
        raise CliError(f"no run or model folder {args.run!r} (in {runs_dir_of(args)} or here)")
    if run is not None and refreshed(run).get("state") in ("queued", "running"):
        raise CliError(f"run {run.id} is still {run.state}; push it once it has finished")
    info(
        args,
        f"pushing the model files of {folder} to {args.repo_id} ({'private' if args.private else 'public'}) ...",
    )
    pushed = push_to_hub(
        folder, args.repo_id, private=args.private, revision=args.revision, commit_message=args.commit_message
    )
    if pushed.made_private:
        info(args, f"{args.repo_id} was public: it is private now")
    print(pushed.url)
    return 0


def register(commands) -> None:
    push = add_command(
        commands,
        "push",
        "upload a run's model to the Hugging Face Hub",
        "Upload a finished run's model files (weights, config, tokenizer, model card) to the Hub.\n"
        "The token comes from HF_TOKEN or the login saved by `hf auth login`; it is never an\n"
        "argument (arguments end up in shell history and `ps`).",
        "  tunelab push latest --repo-id me/sst2-minilm\n"
        "  HF_TOKEN=hf_... tunelab push cls-20261123 --repo-id my-org/model --public --revision v1",
    )
    push.add_argument("run", metavar="RUN", help="run id/folder, or a model folder")
    push.add_argument("--repo-id", required=True, metavar="USER/NAME", help="the model repository")
    visibility = push.add_mutually_exclusive_group()
    visibility.add_argument(
        "--private",
        dest="private",
        action="store_true",
        default=True,
        help="a new repository is private (default)",
    )
    visibility.add_argument(
        "--public", dest="private", action="store_false", help="a new repository is public"
    )
    push.add_argument(
        "--revision", metavar="BRANCH", default=None, help="branch to push to (created if needed)"
    )
    push.add_argument("--commit-message", default=None, help="default: Upload <run> with TuneLab")
    runs_dir_option(push)
    push.set_defaults(func=cmd_push)
