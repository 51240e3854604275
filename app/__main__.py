"""`python -m app [--host H] [--port P] [--auth user:password | --auth-file F | --token T | --no-auth]
[--runs-dir D] [--data-dir D] [--share]`: the same access rules as `tunelab app` (app.auth)."""

from __future__ import annotations

import argparse

from .auth import resolve_access
from .ui import launch


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m app", description="TuneLab web app")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default: 127.0.0.1 only)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument(
        "--auth", default=None, help='"user:password" (default: $TUNELAB_AUTH, else no login)'
    )
    parser.add_argument("--auth-file", default=None, help="lines user:pbkdf2_sha256$...")
    parser.add_argument("--token", default=None, help="access token (default: $TUNELAB_TOKEN)")
    parser.add_argument("--no-auth", action="store_true", help="beyond 127.0.0.1: no login at all")
    parser.add_argument("--runs-dir", default="runs")
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--max-concurrent-runs", type=int, default=1)
    parser.add_argument(
        "--share", action="store_true", help="open a public gradio.live link (off by default)"
    )
    args = parser.parse_args(argv)
    access = resolve_access(args.host, args.auth, args.auth_file, args.token, args.no_auth)
    if access.token_generated:
        print(f"TuneLab app on {access.urls(args.port)[0]}", flush=True)
    launch(args.host, args.port, access, args.runs_dir, args.data_dir, args.share, args.max_concurrent_runs)


if __name__ == "__main__":
    main()
