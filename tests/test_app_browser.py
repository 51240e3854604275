"""The real app in headless Chromium (Debian's /usr/bin/chromium through Playwright): every tab's main
action, a screenshot per tab, and no console errors."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, sentiment_rows

if str(ROOT) not in sys.path:  # the app is a package at the repo root, not installed
    sys.path.insert(0, str(ROOT))

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="needs Debian's chromium at /usr/bin/chromium "
        "(apt-get install -y chromium); Playwright's own browsers are not downloadable here",
    ),
]


def finished_run(runs_dir: Path, run_id: str, task: str, model, tokenizer, config: dict) -> None:
    """A run folder as a command-line run leaves it: model at the root, status, events, config."""
    from tunelab.runs import EventWriter, Run

    run = Run(runs_dir / run_id)
    model.save_pretrained(run.path)
    tokenizer.save_pretrained(run.path)
    run.write_config(config)
    run.write_command(f"accelerate launch recipes/x.py --config {run.path}/config.yaml")
    events = EventWriter(run.path)
    for step in range(1, 11):
        events.write(
            "train",
            step=step,
            epoch=step / 10,
            **{"train/loss": 2.0 / step, "train/lr": 1e-3 * (1 - step / 10)},
        )
    events.write("eval", step=10, epoch=1.0, **{"eval/loss": 0.5, "eval/accuracy": 0.9})
    events.close()
    now = time.time()
    run.update_status(
        state="finished",
        task=task,
        stage="done",
        created=now - 60,
        started=now - 50,
        ended=now,
        step=10,
        max_steps=10,
        metrics={"eval/loss": 0.5, "eval/accuracy": 0.9},
    )
    if task == "cls":
        labels = ["neg", "pos"]
        (run.path / "eval_results.json").write_text(
            json.dumps({"labels": labels, "confusion_matrix": [[5, 1], [2, 4]]})
        )


RUNS_DIRS: dict[str, Path] = {}  # the runs folder of each app_url


@pytest.fixture(scope="module")
def runs_dir(app_url) -> Path:
    return RUNS_DIRS[app_url]


@pytest.fixture(scope="module")
def app_url(tmp_path_factory, tiny_bert):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from app.ui import build_app, launch_options

    base = tmp_path_factory.mktemp("browser")
    runs_dir, data_dir = base / "runs", base / "data"
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    torch.manual_seed(0)
    cls = AutoModelForSequenceClassification.from_pretrained(
        tiny_bert, num_labels=2, id2label={0: "neg", 1: "pos"}, label2id={"neg": 0, "pos": 1}
    )
    finished_run(
        runs_dir, "cls-cli-run", "cls", cls, tokenizer, {"train_file": "reviews.csv", "learning_rate": 1e-3}
    )
    gpt = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=tokenizer.vocab_size,
            n_layer=2,
            n_embd=32,
            n_head=2,
            n_positions=128,
            bos_token_id=tokenizer.cls_token_id,
            eos_token_id=tokenizer.sep_token_id,
        )
    )
    finished_run(
        runs_dir, "clm-cli-run", "clm", gpt, tokenizer, {"train_file": "docs.txt", "learning_rate": 2e-3}
    )
    demo = build_app(runs_dir, data_dir)
    _, url, _ = demo.launch(
        server_name="127.0.0.1", prevent_thread_lock=True, quiet=True, **launch_options(runs_dir, data_dir)
    )
    RUNS_DIRS[url] = runs_dir
    yield url
    demo.tunelab_state.queue.shutdown()
    demo.close()


@contextlib.contextmanager
def app_page(url: str, errors: list[str]):
    """A page of the app in headless Chromium; its console errors and page errors go to ``errors``."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.on("console", lambda msg: errors.append(f"console: {msg.text}") if msg.type == "error" else None)
        page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
        page.set_default_timeout(60_000)
        page.goto(url)
        try:
            yield page
        finally:
            browser.close()


def model_answer(model_dir: Path, text: str) -> str:
    """The label a classifier folder gives ``text``, computed with transformers alone (under the app's
    load lock: the app serves from this process, and two loads at once corrupt transformers' init)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from tunelab.models import LOADING

    with LOADING:
        model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    with torch.no_grad():
        logits = model(**AutoTokenizer.from_pretrained(model_dir)(text, return_tensors="pt")).logits
    return model.config.id2label[int(logits.argmax())]


def pick(page, elem_id: str, value: str) -> None:
    """Set a gradio Dropdown (allow_custom_value) by typing its value."""
    box = page.locator(f"#{elem_id} input").first
    box.click()
    box.fill(value)
    box.press("Enter")
    page.keyboard.press("Escape")


def open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name, exact=True).click()
    page.wait_for_timeout(500)


def test_every_tab_works_in_a_real_browser(app_url, tmp_path):
    from playwright.sync_api import expect

    shots = tmp_path / "screenshots"
    shots.mkdir()
    upload = tmp_path / "reviews.csv"
    upload.write_text("text,label\n" + "\n".join(f"{t},{lab}" for t, lab in sentiment_rows(60)) + "\n")
    errors: list[str] = []
    with app_page(app_url, errors) as page:
        expect(page.get_by_role("tab", name="Data", exact=True)).to_be_visible()

        # Data: upload -> checks report and preview
        page.locator("#data-upload input[type=file]").set_input_files(str(upload))
        expect(page.locator("#data-report")).to_contain_text("passes the checks")
        expect(page.locator("#data-preview")).to_contain_text("label")
        page.screenshot(path=shots / "data.png", full_page=True)

        # Train: check data, estimate
        open_tab(page, "Train")
        expect(page.locator("#train-command")).to_contain_text("accelerate launch", timeout=30_000)
        page.locator("#train-check").click()
        expect(page.locator("#train-status")).to_contain_text(
            "reviews.csv: 60 rows"
        )  # the upload, not the sample
        page.locator("#train-estimate").click()
        expect(page.locator("#train-estimate-text")).to_contain_text("parameters", timeout=180_000)
        page.screenshot(path=shots / "train.png", full_page=True)

        # Runs: the command-line runs are listed with their state
        open_tab(page, "Runs")
        expect(page.locator("#runs-table")).to_contain_text("clm-cli-run")
        expect(page.locator("#runs-table")).to_contain_text("finished")
        page.screenshot(path=shots / "runs.png", full_page=True)

        # Classify: one text; the headline is the model's own answer (both labels are listed below it)
        open_tab(page, "Classify")
        pick(page, "classify-run", "cls-cli-run")
        expected = model_answer(RUNS_DIRS[app_url] / "cls-cli-run", "the film is wonderful")
        page.locator("#classify-text textarea").fill("the film is wonderful")
        page.locator("#classify-btn").click()
        expect(page.locator("#classify-label h2")).to_have_text(expected)
        page.screenshot(path=shots / "classify.png", full_page=True)

        # Chat: one message, a streamed reply
        open_tab(page, "Chat")
        pick(page, "chat-run", "clm-cli-run")
        page.locator("#chat-message textarea").fill("hello there")
        page.locator("#chat-send").click()
        expect(page.locator("#chat-box")).to_contain_text("hello there")
        bot = page.locator('#chat-box [data-testid="bot"]')  # the model's reply, not the user's message
        expect(bot).to_have_count(1, timeout=60_000)
        expect(bot.first).not_to_have_text("", timeout=60_000)
        page.screenshot(path=shots / "chat.png", full_page=True)

        # Compare: two runs
        open_tab(page, "Compare")
        pick(page, "compare-a", "cls-cli-run")
        pick(page, "compare-b", "clm-cli-run")
        page.locator("#compare-btn").click()
        expect(page.locator("#compare-diff")).to_contain_text("train_file")
        page.screenshot(path=shots / "compare.png", full_page=True)

        # Hub: the form, with a password field for the token
        open_tab(page, "Hub")
        expect(page.locator("#hub-token input[type=password]")).to_be_visible()
        expect(page.locator("#hub-push")).to_be_visible()
        page.screenshot(path=shots / "hub.png", full_page=True)

    assert sorted(p.name for p in shots.iterdir()) == sorted(
        f"{t}.png" for t in ("data", "train", "runs", "classify", "chat", "compare", "hub")
    )
    assert not errors, "\n".join(errors)


def test_the_train_tabs_settings_follow_the_task_and_reach_the_config_preview(app_url, tmp_path):
    """The widgets made from the settings table: a task brings its defaults, an Advanced setting reaches
    config.yaml, the Slurm fields show for a Slurm run only."""
    from playwright.sync_api import expect

    errors: list[str] = []
    with app_page(app_url, errors) as page:
        open_tab(page, "Train")
        config, command = page.locator("#train-yaml"), page.locator("#train-command")
        expect(command).to_contain_text("bert_cls.py", timeout=30_000)
        # classification's defaults: batch 32 at lr 1e-4, length-grouped, no dropout, sparse embeddings (README)
        expect(config).to_contain_text("learning_rate: 0.0001")
        expect(config).to_contain_text("per_device_train_batch_size: 32")
        expect(config).to_contain_text("group_by_length: true")
        expect(config).to_contain_text("hidden_dropout: 0.0")
        expect(config).to_contain_text("sparse_embeddings: true")
        page.get_by_label("causal-lm", exact=True).check()
        expect(command).to_contain_text("gpt2_clm.py")
        expect(config).to_contain_text("learning_rate: 0.001")
        expect(config).to_contain_text("max_train_steps: 200")
        expect(config).to_contain_text("resid_pdrop: null")  # GPT-2: blank, its own dropout, not 0
        page.get_by_label("classification", exact=True).check()
        expect(command).to_contain_text("bert_cls.py")
        page.get_by_text("Advanced", exact=True).click()
        smoothing = page.get_by_label("Label smoothing", exact=True)
        smoothing.fill("0.1")
        smoothing.press("Tab")
        expect(config).to_contain_text("label_smoothing: 0.1")
        page.get_by_role("textbox", name="Hidden dropout").fill("0.2")
        page.get_by_role("textbox", name="Hidden dropout").press("Tab")
        expect(config).to_contain_text("hidden_dropout: 0.2")
        expect(page.get_by_label("Nodes", exact=True)).to_be_hidden()
        page.get_by_label("Slurm cluster", exact=True).check()
        expect(page.get_by_label("Nodes", exact=True)).to_be_visible()
        page.screenshot(path=tmp_path / "train-settings.png", full_page=True)
    assert not errors, "\n".join(errors)


# ---- plots that always draw ------------------------------------------------------------------------

MARKS_JS = """(id) => {
  const root = document.querySelector('#' + id);
  if (!root) return null;
  const drawn = sel => [...root.querySelectorAll(sel)].filter(p => (p.getAttribute('d') || '').length > 2).length;
  return {line: drawn('g.role-mark.mark-line path'), symbol: drawn('g.role-mark.mark-symbol path'),
          rect: drawn('g.role-mark.mark-rect path')};
}"""


def wait_for_marks(page, elem_id: str, kind: str, at_least: int = 1, timeout_ms: int = 10_000) -> dict:
    """Until the chart in #elem_id has drawn ``at_least`` SVG marks of ``kind`` (line, symbol, rect)."""
    try:
        page.wait_for_function(
            f"(id) => {{ const m = ({MARKS_JS})(id); return m && m.{kind} >= {at_least}; }}",
            arg=elem_id,
            timeout=timeout_ms,
        )
    except Exception as e:  # noqa: BLE001 - fail with what the chart holds
        raise AssertionError(
            f"#{elem_id}: no {kind} drawn within {timeout_ms} ms: {page.evaluate(MARKS_JS, elem_id)}"
        ) from e
    return page.evaluate(MARKS_JS, elem_id)


def test_plots_draw_their_marks_without_a_reload(app_url, runs_dir, tmp_path, tiny_bert):
    """Data tab charts right after a check; Loss and Learning-rate of a running and of a finished run
    within 10 s of opening the Runs tab; an eval chart with one evaluation shows its point."""
    from gradio_client import Client, handle_file
    from playwright.sync_api import expect

    shots = tmp_path / "plots"
    shots.mkdir()
    upload = tmp_path / "long reviews.csv"
    upload.write_text("text,label\n" + "\n".join(f"{t},{lab}" for t, lab in sentiment_rows(600)) + "\n")
    client = Client(app_url, verbose=False)
    dataset = client.predict(handle_file(str(upload)), api_name="/upload_dataset")[0]["value"]
    settings = {
        "task": "classification",
        "dataset": dataset,
        "base_kind": "local folder",
        "base_path": str(tiny_bert),
        "num_train_epochs": 40,
        "per_device_train_batch_size": 8,
        "max_train_samples": 0,
        "mixed_precision": "no",
        "logging_steps": 2,
    }
    (runs_dir / "cls-cli-run" / "train.log").write_text("".join(f"log line {i}\n" for i in range(1, 101)))
    _, running = client.predict(json.dumps(settings), api_name="/submit_run")
    errors: list[str] = []
    try:
        with app_page(app_url, errors) as page:
            headers = page.locator("#data-problems thead").inner_text()
            assert "problem" in headers and "1" not in headers, headers  # an empty table keeps its columns

            # Data: both charts draw right after the check, on the same tab
            page.locator("#data-upload input[type=file]").set_input_files(str(upload))
            expect(page.locator("#data-report")).to_contain_text("passes the checks")
            assert wait_for_marks(page, "data-label-plot", "rect", 2)["rect"] == 2  # pos, neg
            assert wait_for_marks(page, "data-length-plot", "rect", 1)["rect"] >= 1
            page.locator("#data-label-plot").screenshot(path=shots / "data-labels.png")
            page.locator("#data-length-plot").screenshot(path=shots / "data-lengths.png")

            # Runs: a run in progress, then a finished one with a single evaluation
            deadline = time.time() + 120
            while client.predict(running, api_name="/run_status").get("step", 0) < 4:
                assert time.time() < deadline, client.predict(running, api_name="/run_status")
                time.sleep(0.5)
            open_tab(page, "Runs")
            pick(page, "runs-select", running)
            expect(page.locator("#runs-info")).to_contain_text("running")
            for plot in ("runs-loss-plot", "runs-lr-plot"):
                wait_for_marks(page, plot, "line")
                page.locator(f"#{plot}").screenshot(path=shots / f"running-{plot}.png")
            # Stop from the page: the note says it is stopping, then goes once the run has stopped
            expect(page.locator("#runs-stop")).to_be_enabled()
            page.locator("#runs-stop").click()
            expect(page.locator("#runs-action")).to_contain_text("stopping")
            expect(page.locator("#runs-info")).to_contain_text("stopped", timeout=90_000)
            expect(page.locator("#runs-action")).not_to_contain_text("stopping", timeout=10_000)
            expect(page.locator("#runs-stop")).to_be_disabled()
            expect(page.locator("#runs-resume")).to_be_enabled()
            pick(page, "runs-select", "cls-cli-run")
            expect(page.locator("#runs-info")).to_contain_text("finished")
            expect(page.locator("#runs-stop")).to_be_disabled()  # nothing to stop
            expect(page.locator("#runs-resume")).to_be_disabled()
            log = page.locator("#runs-log textarea")
            expect(log).to_have_value(re.compile(r"log line 100$"))
            assert log.evaluate("e => e.scrollHeight <= e.clientHeight + 2"), (
                "the log's last lines are hidden"
            )
            for plot in ("runs-loss-plot", "runs-lr-plot"):
                wait_for_marks(page, plot, "line")
                page.locator(f"#{plot}").screenshot(path=shots / f"finished-{plot}.png")
            assert wait_for_marks(page, "runs-eval-plot", "symbol")["symbol"] == 1  # eval/accuracy at step 10
            page.locator("#runs-eval-plot").screenshot(path=shots / "finished-eval.png")
    finally:
        if client.predict(running, api_name="/run_status").get("state") in ("queued", "running"):
            client.predict(running, api_name="/stop_run")
    assert len(list(shots.iterdir())) == 7
    assert not errors, "\n".join(errors)


# ---- one dataset context -------------------------------------------------------------------------


def test_an_upload_with_its_own_column_names_is_detected_and_the_train_tab_follows(app_url, tmp_path, capfd):
    """A two-column CSV (review, domain), three string labels, quoted multi-line fields: the Data tab
    finds the label column; the Train tab then shows that dataset and mapping; its Check data passes."""
    import csv

    from playwright.sync_api import expect

    upload = tmp_path / "product reviews.csv"
    domains = ["books", "kitchen", "electronics"]
    with upload.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["review", "domain"])
        for i in range(150):
            writer.writerow(
                [f'Item {i} was "fine",\nsaid a {domains[i % 3]} buyer, line two of {i}', domains[i % 3]]
            )
    errors: list[str] = []
    with app_page(app_url, errors) as page:
        page.locator("#data-upload input[type=file]").set_input_files(str(upload))
        report = page.locator("#data-report")
        expect(report).to_contain_text("passes the checks")
        expect(report).to_contain_text("label column domain")
        expect(report).to_contain_text("3 labels")
        page.screenshot(path=tmp_path / "data.png", full_page=True)

        open_tab(page, "Train")  # nothing else: the tab follows the Data tab
        expect(page.locator("#train-dataset input")).to_have_value("product-reviews.csv")
        expect(page.locator("#train-text-column textarea, #train-text-column input")).to_have_value("review")
        expect(page.locator("#train-label-column textarea, #train-label-column input")).to_have_value(
            "domain"
        )
        page.locator("#train-check").click()
        expect(page.locator("#train-status")).to_contain_text("150 rows")
        # the Data plan's measured step (it runs in the app: the test waits for it before it ends)
        expect(page.locator("#train-plan")).to_contain_text("budget", timeout=120_000)
        page.screenshot(path=tmp_path / "train.png", full_page=True)

        # user mistakes: said in the app's words, no traceback on the server
        label_box = page.locator("#train-label-column textarea, #train-label-column input")
        label_box.fill("stars")
        page.locator("#train-check").click()
        status = page.locator("#train-status")
        expect(status).to_contain_text("column 'stars' (Label column) does not exist")
        assert "--label_column" not in status.inner_text() and "label_column)" not in status.inner_text()
        open_tab(page, "Runs")
        pick(page, "runs-select", "no-such-run")
        page.get_by_role("button", name="Delete", exact=True).click()
        expect(page.get_by_text("Run no-such-run does not exist")).to_be_visible()
    assert not errors, "\n".join(errors)
    server = capfd.readouterr().err
    assert "Traceback" not in server, server[-3000:]


def test_default_settings_on_a_5000_row_upload_train_on_every_row_or_say_why(app_url, tmp_path):
    """Never a silent sample: Max train samples stays 0 (all rows), the Data plan says how many rows
    train, how many texts max_length truncates, and the measured time against the budget."""
    import csv

    from playwright.sync_api import expect

    upload = tmp_path / "big reviews.csv"
    words = ["great", "dull", "moving", "clumsy", "superb", "bland", "funny", "tedious"]
    with upload.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["review", "domain"])
        for i in range(5000):
            long = " ".join(words[(i + k) % 8] for k in range(10 + (i % 7) * 30))  # 10 to 190 words
            writer.writerow([f"review {i}: {long}", ["books", "kitchen", "music"][i % 3]])
    errors: list[str] = []
    with app_page(app_url, errors) as page:
        page.locator("#data-upload input[type=file]").set_input_files(str(upload))
        expect(page.locator("#data-report")).to_contain_text("5,000 rows")
        open_tab(page, "Train")
        plan = page.locator("#train-plan")
        expect(plan).to_contain_text("5,000 rows")
        expect(plan).to_contain_text("trains on 4,500 after the validation share (all of them)")
        expect(plan).to_contain_text("truncates")
        expect(page.locator("#train-yaml")).to_contain_text("max_train_samples: null")
        # the measured step arrives: within the budget, or a suggestion with its button
        expect(plan).to_contain_text("budget", timeout=120_000)
        text = plan.inner_text()
        assert "within the 5 min budget" in text or "Suggestion: train on" in text, text
        if "Suggestion: train on" in text:
            page.locator("#train-suggestion").click()
            expect(page.locator("#train-yaml")).not_to_contain_text("max_train_samples: null")
            expect(plan).to_contain_text("within the 5 min budget")
        page.screenshot(path=tmp_path / "train-plan.png", full_page=True)
    assert not errors, "\n".join(errors)


def test_a_two_turn_conversation_with_a_chat_fine_tuned_model(app_url, runs_dir, chat_run, tmp_path):
    """The Chat tab formats each turn with the model's chat template: a model fine-tuned on greetings
    answers both turns in its trained form (a plain 'User:' transcript is not what it learned)."""
    import re

    from playwright.sync_api import expect

    shutil.copytree(chat_run, runs_dir / "chat-cli-run")
    errors: list[str] = []
    replies = []
    with app_page(app_url, errors) as page:
        open_tab(page, "Chat")
        pick(page, "chat-run", "chat-cli-run")
        temperature = page.locator("#chat-temperature input[type=number]")
        temperature.fill("0")
        temperature.press("Enter")
        for n, (name, seen) in enumerate((("Grace", "lamp, a river"), ("Bob", "candle, a stone")), 1):
            page.locator("#chat-message textarea").fill(
                f"Hi, I am {name}. Today I saw a {seen}. Please greet me."
            )
            page.locator("#chat-send").click()
            bot = page.locator('#chat-box [data-testid="bot"]')
            expect(bot).to_have_count(n, timeout=60_000)
            expect(bot.nth(n - 1)).to_contain_text("!", timeout=60_000)
            page.wait_for_timeout(1000)  # the rest of the streamed reply
            replies.append(bot.nth(n - 1).inner_text().strip())
        page.screenshot(path=tmp_path / "chat-two-turns.png", full_page=True)
    for reply in replies:
        assert re.fullmatch(r"Hello \w+! You saw a \w+\.", reply), replies
    assert not errors, "\n".join(errors)
