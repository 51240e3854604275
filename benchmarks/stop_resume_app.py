"""Stop a run from the app N times in a row, resuming it after each stop, then let it finish.

    python benchmarks/stop_resume_app.py [--stops 10] [--samples 2000]

The app runs in this process (as `tunelab app` runs it) and is driven through its own API with
gradio_client, the way the browser drives it: upload an SST-2 sample, train the embedded MiniLM logging
every step, and N times: wait until the run has trained a few more steps, press Stop, wait for
"stopped" (with the time it took), check that the checkpoint of the step it stopped at is there, press
Resume. It counts the stops that ended "stopped" and those lost (killed after the grace period, failed,
or without that checkpoint), then waits for the run to finish at its planned step. Writes
benchmarks/results/stop_resume_app.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))
SST2 = ROOT.parent / "shared" / "data" / "sst2" / "train.tsv"
WAIT_S = 300


def status(client, run_id: str) -> dict:
    return client.predict(run_id, api_name="/run_status")


def wait(client, run_id: str, done, what: str) -> dict:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        s = status(client, run_id)
        if done(s):
            return s
        if s.get("state") == "failed":
            raise SystemExit(f"the run failed while waiting for {what}: {s.get('reason')}")
        time.sleep(0.2)
    raise SystemExit(f"timed out after {WAIT_S} s waiting for {what}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stops", type=int, default=10)
    parser.add_argument("--samples", type=int, default=2000)
    args = parser.parse_args()

    from gradio_client import Client, handle_file

    from app.ui import build_app, launch_options

    work = Path(tempfile.mkdtemp(prefix="tunelab-stops-"))
    runs_dir, data_dir = work / "runs", work / "data"
    demo = build_app(runs_dir, data_dir)
    _, url, _ = demo.launch(
        server_name="127.0.0.1", prevent_thread_lock=True, quiet=True, **launch_options(runs_dir, data_dir)
    )
    client = Client(url, verbose=False)
    data = work / "sst2-sample.csv"
    with SST2.open() as src, data.open("w", newline="") as out:
        rows = list(csv.DictReader(src, delimiter="\t"))[: args.samples]
        writer = csv.writer(out)
        writer.writerow(["text", "label"])
        writer.writerows((r["sentence"], r["label"]) for r in rows)
    dataset = client.predict(handle_file(str(data)), api_name="/upload_dataset")[0]["value"]
    settings = {
        "task": "classification",
        "dataset": dataset,
        "max_train_samples": 0,  # every row: enough steps for every stop
        "max_train_steps": 3 * args.stops * 2,
        "per_device_train_batch_size": 16,
        "max_length": 64,
        "logging_steps": 1,
        "mixed_precision": "no",
    }
    _, run_id = client.predict(json.dumps(settings), api_name="/submit_run")
    results = []
    try:
        for i in range(args.stops):
            running = wait(
                client,
                run_id,
                lambda s: s.get("state") == "running" and s.get("stage") == "training",
                "training",
            )
            start_step = running.get("step") or 0
            wait(client, run_id, lambda s, n=start_step: (s.get("step") or 0) >= n + 3, "three more steps")
            asked = time.monotonic()
            message = client.predict(run_id, api_name="/stop_run")
            ended = wait(client, run_id, lambda s: s.get("state") not in ("running", "queued"), "the stop")
            took = time.monotonic() - asked
            folder = runs_dir / run_id / "checkpoints"
            checkpoints = sorted(folder.glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
            at_stop = (folder / f"step-{ended.get('step')}" / "trainer_state.json").exists()
            reason = ended.get("reason") or ""
            ok = ended["state"] == "stopped" and "killed" not in reason and at_stop
            results.append(
                {
                    "stop": i + 1,
                    "state": ended["state"],
                    "reason": ended.get("reason"),
                    "step": ended.get("step"),
                    "checkpoint": checkpoints[-1].name if checkpoints else None,
                    "seconds_to_stopped": round(took, 2),
                    "ok": ok,
                    "message": message,
                }
            )
            print(json.dumps(results[-1]), flush=True)
            client.predict(run_id, api_name="/resume_run")
        final = wait(client, run_id, lambda s: s.get("state") == "finished", "the end of the run")
    finally:
        demo.tunelab_state.queue.shutdown()
        demo.close()
    summary = {
        "machine": f"{platform.processor() or platform.machine()}, {platform.system()}",
        "stops": args.stops,
        "stopped": sum(r["ok"] for r in results),
        "lost": sum(not r["ok"] for r in results),
        "max_seconds_to_stopped": max(r["seconds_to_stopped"] for r in results),
        "finished_at_step": final.get("step"),
        "max_steps": final.get("max_steps"),
        "runs": results,
    }
    out = ROOT / "benchmarks" / "results" / "stop_resume_app.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=2))


if __name__ == "__main__":
    main()
