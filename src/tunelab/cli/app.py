"""`tunelab app`: the web app."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path

from .common import CliError, add_command, info, project_root, runs_dir_of, runs_dir_option


def app_module(root: Path, name: str):
    """``app.<name>`` from the source tree, or one line saying what is missing."""
    import importlib

    try:
        return importlib.import_module(f"app.{name}")
    except ModuleNotFoundError as e:
        if e.name in ("app", f"app.{name}"):
            raise CliError(f"the web app is missing ({root / 'app' / f'{name}.py'} not found)") from None
        raise CliError(
            f"the web app needs the package {e.name!r}: install the project with `pip install -e .`"
        ) from None


def cmd_app(args: argparse.Namespace) -> int:
    root = project_root("app")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    auth = app_module(root, "auth")  # light: a wrong option is one line, before gradio loads
    if args.hash_password:
        password = getpass.getpass("password: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\n")
        if not password:
            raise CliError("an empty password")
        print(f"{args.hash_password}:{auth.hash_password(password)}")
        return 0
    access = auth.resolve_access(args.host, args.auth, args.auth_file, args.token, args.no_auth)
    from tunelab.launch.targets import load_targets

    load_targets(args.targets)  # a wrong targets file is one line, before gradio loads
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    ui = app_module(root, "ui")
    data_dir = Path(args.data_dir or os.environ.get("TUNELAB_DATA_DIR") or "data")
    (url,) = access.urls(args.port)
    where = f"(runs: {runs_dir_of(args)}, data: {data_dir})"
    if access.token_generated:  # printed once, as Jupyter does: the only place it is shown
        print(
            f"TuneLab app on {url} {where}\nOpen that URL (its token is the login; from another machine "
            f"use this machine's address for {args.host}).",
            flush=True,
        )
    else:
        info(args, f"TuneLab app on {url.split('?')[0]} {where}")
    if access.open_to_all:
        print(
            f"warning: --no-auth: anyone who reaches {args.host}:{args.port} can train, read the runs and data, "
            "and use this app's Hub settings",
            file=sys.stderr,
        )
    ui.launch(
        host=args.host,
        port=args.port,
        access=access,
        reach=auth.Reach.of(access, args.allow_server_hub_token, args.model_dir, args.allow_hub_models),
        runs_dir=runs_dir_of(args),
        data_dir=data_dir,
        share=False,
        max_concurrent_runs=args.max_concurrent_runs,
        targets_file=args.targets,
    )
    return 0


def register(commands) -> None:
    app = add_command(
        commands,
        "app",
        "start the web app",
        "Start the TuneLab web app (Gradio): train, watch runs, try models, push to the Hub.",
        "  tunelab app\n  tunelab app --host 0.0.0.0 --port 8080            # prints a URL with an access token\n"
        "  TUNELAB_AUTH=admin:s3cret tunelab app --host 0.0.0.0 --runs-dir /data/runs\n"
        "  tunelab app --hash-password alice >> users.txt && tunelab app --host 0.0.0.0 --auth-file users.txt",
    )
    app.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: all interfaces)")
    app.add_argument("--port", type=int, default=7860, help="port to listen on")
    runs_dir_option(app)
    app.add_argument(
        "--data-dir",
        metavar="DIR",
        default=None,
        help="folder of uploaded data sets (default: $TUNELAB_DATA_DIR, else ./data)",
    )
    app.add_argument(
        "--auth",
        metavar="USER:PASS",
        default=None,
        help="require a login (default: $TUNELAB_AUTH, which keeps it out of `ps`)",
    )
    app.add_argument(
        "--auth-file",
        metavar="FILE",
        default=None,
        help="require a login: lines user:pbkdf2_sha256$... (make them with --hash-password USER)",
    )
    app.add_argument(
        "--token",
        default=None,
        help="require this access token (default: $TUNELAB_TOKEN; beyond 127.0.0.1 without a login, a "
        "generated one, printed once as a URL)",
    )
    app.add_argument(
        "--no-auth",
        action="store_true",
        help="beyond 127.0.0.1, no login and no token: anyone who reaches the port uses the app",
    )
    app.add_argument(
        "--allow-server-hub-token",
        action="store_true",
        help="beyond 127.0.0.1: let the Hub tab use this server's HF_TOKEN / saved login (default: only a "
        "token typed in the page)",
    )
    app.add_argument(
        "--model-dir",
        action="append",
        default=[],
        metavar="DIR",
        help="beyond 127.0.0.1: a folder whose models the pages may load besides the runs (repeatable)",
    )
    app.add_argument(
        "--allow-hub-models",
        action="store_true",
        help="beyond 127.0.0.1: let the pages load models by Hub id",
    )
    app.add_argument(
        "--hash-password",
        metavar="USER",
        default=None,
        help="print an --auth-file line for USER (the password is read from the terminal or stdin) and exit",
    )
    app.add_argument("--max-concurrent-runs", type=int, default=1, metavar="N", help="trainings run at once")
    app.add_argument(
        "--targets",
        metavar="FILE",
        default=None,
        help="Slurm defaults for 'Run on: Slurm cluster' (default: ~/.config/tunelab/targets.yaml, if it exists)",
    )
    app.set_defaults(func=cmd_app)
