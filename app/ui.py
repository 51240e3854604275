"""TuneLab's web app: layout and launch.

    build_app(runs_dir, data_dir, max_concurrent_runs=1) -> gr.Blocks
    launch(host="127.0.0.1", port=7860, access=None, runs_dir="runs", data_dir="data", share=False,
           max_concurrent_runs=1, block=True) -> (demo, url)

``access`` (``app.auth.resolve_access``) says who may use it: no login on loopback, a login or an access
token beyond it. The app binds 127.0.0.1 unless told otherwise, serves files only from its own data and
runs folders, caps uploads at ``MAX_FILE_SIZE`` and never opens a share link unless ``share=True``.
``tunelab app`` and ``python -m app`` both end here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import gradio as gr  # noqa: E402 - the analytics switch must be set before gradio is imported

from tunelab.data.samples import materialize_samples  # noqa: E402

from . import chat_tab, classify_tab, compare_tab, data_tab, hub_tab, runs_tab, train_tab  # noqa: E402
from .auth import Access, Reach, TokenGate  # noqa: E402
from .queue import RunQueue  # noqa: E402
from .state import AppState  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
MAX_FILE_SIZE = "200mb"
QUEUE_MAX_SIZE = 64  # pending UI events per app; a bounded queue refuses more instead of piling up

CSS = """
.tl-progress { width: 100%; background: var(--neutral-200); border-radius: 6px; height: 18px; overflow: hidden; }
.tl-progress > div { height: 100%; background: var(--color-accent); }
"""


def build_app(
    runs_dir: str | Path,
    data_dir: str | Path,
    max_concurrent_runs: int = 1,
    targets_file: str | Path | None = None,
    reach: Reach | None = None,
) -> gr.Blocks:
    """The Blocks app over ``runs_dir`` (run folders) and ``data_dir`` (datasets); starts the run queue.
    ``targets_file``: Slurm and Ray defaults (partition, time, address, ...; default ~/.config/tunelab/targets.yaml);
    ``reach``: what a browser may name beyond them (default: anything, as on loopback)."""
    from tunelab.launch.targets import load_targets

    runs_dir, data_dir = Path(runs_dir).resolve(), Path(data_dir).resolve()
    runs_dir.mkdir(parents=True, exist_ok=True)
    materialize_samples(data_dir)
    queue = RunQueue(runs_dir, max_concurrent_runs, cwd=REPO_ROOT)
    state = AppState(
        runs_dir=runs_dir,
        data_dir=data_dir,
        queue=queue,
        **{f"{name}_defaults": values for name, values in load_targets(targets_file).items()},
        reach=reach or Reach(),
    )
    # Gradio's copies of uploads and of files it served (Classify's texts and predictions) go after a day,
    # checked hourly, and all of them when the app stops.
    with gr.Blocks(title="TuneLab", analytics_enabled=False, delete_cache=(3600, 24 * 3600)) as demo:
        gr.Markdown("# TuneLab\nFine-tune a classifier or pretrain a small GPT-2 on your data, then try it.")
        with gr.Tabs():
            data_tab.build(state)
            train_tab.build(state)
            runs_tab.build(state)
            chat_tab.build(state)
            classify_tab.build(state)
            compare_tab.build(state)
            hub_tab.build(state)
    demo.queue(max_size=QUEUE_MAX_SIZE, default_concurrency_limit=4)
    demo.tunelab_state = state  # type: ignore[attr-defined] - for tests and launch()
    queue.start()
    return demo


def launch_options(
    runs_dir: str | Path, data_dir: str | Path, access: Access | None = None
) -> dict[str, Any]:
    """The safety settings every launch uses: file routes limited to the app's folders, upload cap, and
    ``access``: gradio's login for users and passwords, the access-token gate in front of every route."""
    from starlette.middleware import Middleware

    access = access or Access("127.0.0.1")
    return {
        "allowed_paths": [str(Path(data_dir).resolve()), str(Path(runs_dir).resolve())],
        "max_file_size": MAX_FILE_SIZE,
        "css": CSS,
        "auth": access.login(),
        "app_kwargs": {"middleware": [Middleware(TokenGate, token=access.token)]},
    }


def launch(
    host: str = "127.0.0.1",
    port: int | None = 7860,
    access: Access | None = None,
    runs_dir: str | Path = "runs",
    data_dir: str | Path = "data",
    share: bool = False,
    max_concurrent_runs: int = 1,
    block: bool = True,
    targets_file: str | Path | None = None,
    reach: Reach | None = None,
):
    """Build and serve the app; returns (demo, local URL) (when ``block`` is False it returns at once)."""
    demo = build_app(runs_dir, data_dir, max_concurrent_runs, targets_file, reach)
    _, url, _ = demo.launch(
        server_name=host,
        server_port=port,
        share=share,
        prevent_thread_lock=not block,
        quiet=not block,
        **launch_options(runs_dir, data_dir, access or Access(host)),
    )
    return demo, url
