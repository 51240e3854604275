"""Who may use the app: beyond loopback a login or an access token, checked on the real app over HTTP
(the server binds 0.0.0.0, the tests only ever connect to 127.0.0.1)."""

from __future__ import annotations

import re
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import ROOT
from test_cli import BIN, free_port

from app.auth import check_password, hash_password, read_auth_file, resolve_access
from tunelab.errors import ConfigError


class App:
    """`tunelab app ARGS` in the background, its output collected line by line."""

    def __init__(self, *args: str, stdin: str | None = None):
        self.port = free_port()
        command = [str(BIN), "app", "--port", str(self.port), *args]
        self.proc = subprocess.Popen(
            command,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=ROOT,
        )
        self.lines: list[str] = []
        threading.Thread(target=lambda: self.lines.extend(self.proc.stdout), daemon=True).start()
        self.url = f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return "".join(self.lines)

    def wait_until_up(self, timeout: float = 90) -> App:
        """Until /healthz answers (it needs no token); fails with the app's output."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"the app ended: {self.output()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.5)
        self.stop()
        pytest.fail(f"the app did not answer within {timeout:.0f} s: {self.output()[-3000:]}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
    """(status, headers, body) of a GET that does not follow redirects."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(urllib.request.Request(url, headers=headers or {}), timeout=20) as response:
            return response.status, dict(response.headers), response.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode(errors="replace")


def test_beyond_loopback_the_app_starts_with_a_generated_token_and_refuses_requests_without_it(tmp_path):
    from gradio_client import Client

    app = App("--host", "0.0.0.0", "--runs-dir", str(tmp_path / "runs"), "--data-dir", str(tmp_path / "data"))
    try:
        app.wait_until_up()
        found = re.search(r"http://127\.0\.0\.1:\d+/\?token=([\w-]+)", app.output())
        assert found, app.output()
        token = found.group(1)
        assert len(token) >= 24
        status, _, body = get(f"{app.url}/")
        assert status == 401 and "access token" in body
        assert get(f"{app.url}/gradio_api/info")[0] == 401
        assert get(f"{app.url}/?token=wrong-{token}")[0] == 401
        status, headers, _ = get(f"{app.url}/?token={token}")  # the printed URL: a cookie, then the page
        assert status == 303 and headers["location"] == "/" and "HttpOnly" in headers["set-cookie"]
        cookie = headers["set-cookie"].split(";")[0]
        status, _, page = get(f"{app.url}/", {"Cookie": cookie})
        assert status == 200 and "TuneLab" in page
        with pytest.raises(Exception):  # noqa: B017 - gradio_client's own error for a 401
            Client(f"{app.url}/", verbose=False)
        client = Client(f"{app.url}/", headers={"Authorization": f"Bearer {token}"}, verbose=False)
        result = client.predict("sample-sentiment.csv", api_name="/use_sample")
        assert "passes the checks" in result[1]
        assert app.output().count(token) == 1  # printed once, at start, and nowhere after
    finally:
        app.stop()


def test_an_auth_file_of_hashed_passwords_logs_users_in(tmp_path):
    from gradio_client import Client

    made = subprocess.run(
        [str(BIN), "app", "--hash-password", "alice"],
        input="s3cret-pass\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    line = made.stdout.strip()
    assert line.startswith("alice:pbkdf2_sha256$") and "s3cret-pass" not in line
    users = tmp_path / "users.txt"
    users.write_text(f"# the team\n{line}\n")
    app = App("--host", "0.0.0.0", "--auth-file", str(users), "--runs-dir", str(tmp_path / "runs"),
              "--data-dir", str(tmp_path / "data"))  # fmt: skip
    try:
        app.wait_until_up()
        assert "token=" not in app.output()  # a login, not a token
        with pytest.raises(Exception):  # noqa: B017
            Client(f"{app.url}/", verbose=False)
        with pytest.raises(Exception):  # noqa: B017
            Client(f"{app.url}/", auth=("alice", "wrong"), verbose=False)
        client = Client(f"{app.url}/", auth=("alice", "s3cret-pass"), verbose=False)
        assert "passes the checks" in client.predict("sample-sentiment.csv", api_name="/use_sample")[1]
    finally:
        app.stop()


def test_no_auth_beyond_loopback_is_explicit_and_warned_about(tmp_path):
    app = App("--host", "0.0.0.0", "--no-auth", "--runs-dir", str(tmp_path / "runs"),
              "--data-dir", str(tmp_path / "data"))  # fmt: skip
    try:
        app.wait_until_up()
        assert get(f"{app.url}/")[0] == 200
        assert "warning: --no-auth: anyone who reaches 0.0.0.0" in app.output()
    finally:
        app.stop()


def test_access_options_are_checked_in_one_line_before_the_app_loads(tmp_path, monkeypatch):
    monkeypatch.delenv("TUNELAB_AUTH", raising=False)
    monkeypatch.delenv("TUNELAB_TOKEN", raising=False)
    assert resolve_access("127.0.0.1").token is None  # loopback: no login, as before
    generated = resolve_access("0.0.0.0")
    assert generated.token_generated and generated.remote
    assert resolve_access("0.0.0.0", token="a-token-of-enough-length").token == "a-token-of-enough-length"
    monkeypatch.setenv("TUNELAB_TOKEN", "from-the-environment-16")
    assert resolve_access("0.0.0.0").token == "from-the-environment-16"
    for kwargs, message in (
        ({"auth": "a:b", "no_auth": True}, "--no-auth contradicts --auth"),
        ({"auth": "a:b", "token": "x" * 20}, "choose one way to log in"),
        ({"token": "short"}, "at least 16 characters"),
        ({"auth": "nopassword"}, "--auth must be user:password"),
    ):
        monkeypatch.delenv("TUNELAB_TOKEN", raising=False)
        with pytest.raises(ConfigError, match=message):
            resolve_access("0.0.0.0", **kwargs)
    stored = hash_password("pw")
    assert (
        check_password(stored, "pw") and not check_password(stored, "pw2") and stored != hash_password("pw")
    )
    bad = tmp_path / "users.txt"
    bad.write_text("alice:pbkdf2_sha256$1$salt$00\nbob:plaintext\n")
    with pytest.raises(ConfigError, match=r"line 2 is not user:pbkdf2_sha256"):
        read_auth_file(bad)
    proc = subprocess.run(
        [str(BIN), "app", "--host", "0.0.0.0", "--token", "short"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode != 0 and "--token must be at least 16 characters" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_the_images_healthcheck_needs_no_token():
    for name in ("Dockerfile", "Dockerfile.cuda"):
        text = (Path(ROOT) / name).read_text()
        assert "7860/healthz" in text and '"--host", "0.0.0.0"' in text


@pytest.fixture
def remote_app(tmp_path, tiny_bert, monkeypatch):
    """The app as a team server runs it: behind an access token, with the default reach beyond
    loopback (no server Hub token, models from its runs only, no Hub ids); a finished run to push."""
    import shutil

    from gradio_client import Client

    from app.auth import Access, Reach
    from app.ui import build_app, launch_options
    from tunelab.runs import Run

    runs_dir, data_dir = tmp_path / "runs", tmp_path / "data"
    run = Run(runs_dir / "cls-team-run")
    shutil.copytree(tiny_bert, run.path)
    run.update_status(state="finished", task="cls")
    access = Access("0.0.0.0", token="team-token-0123456789")
    demo = build_app(runs_dir, data_dir, reach=Reach.of(access))
    _, url, _ = demo.launch(
        server_name="127.0.0.1",
        prevent_thread_lock=True,
        quiet=True,
        **launch_options(runs_dir, data_dir, access),
    )
    client = Client(url, headers={"Authorization": f"Bearer {access.token}"}, verbose=False)
    yield client, run
    demo.tunelab_state.queue.shutdown()
    demo.close()


def test_beyond_loopback_pages_load_models_only_from_the_runs(remote_app, tiny_bert, tmp_path):
    client, run = remote_app
    for spec, message in (
        ("/etc", "loads models only from its runs"),
        (str(run.path / ".." / ".." / ".."), "loads models only from its runs"),
        (str(tiny_bert), "loads models only from its runs"),
        ("bert-base-uncased", "does not load models from the Hub"),
    ):
        with pytest.raises(Exception, match=message):
            client.predict("", spec, "a text", api_name="/classify")
    # a run of the app, typed as a folder, is allowed
    answer = client.predict("", str(run.path), "a text", api_name="/classify")
    assert answer["label"]


def test_beyond_loopback_the_hub_tab_never_lends_the_servers_token(remote_app, monkeypatch, tmp_path, capfd):
    from fake_hub import FakeHub, hub_environment

    client, run = remote_app
    server_token = "hf_ServerOwnToken0123456789abcdefgh"
    typed = "hf_TypedByTheUser0123456789abcdefgh"
    hub_environment(monkeypatch, tmp_path)
    with FakeHub(typed) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.setenv("HF_TOKEN", server_token)  # the server's own, in its environment
        message, field = client.predict(run.id, "someone/team-model", True, "", api_name="/push_to_hub")
        assert message.startswith("✗ Type a Hugging Face write token") and field == ""
        assert not hub.requests  # nothing was sent with the server's token
        message, field = client.predict(run.id, "a/b/c", True, typed, api_name="/push_to_hub")
        assert "'a/b/c' is not a repository id" in message and field == ""  # the token field is cleared
        assert not hub.requests
        message, field = client.predict(run.id, "someone/team-model", True, typed, api_name="/push_to_hub")
        assert message.startswith("✓ Pushed") and field == ""
        sent = {r.headers["authorization"] for r in hub.requests if "authorization" in r.headers}
        assert sent == {f"Bearer {typed}"}  # the typed token, never the server's
    out, err = capfd.readouterr()
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    for secret in (typed, server_token):
        assert secret not in out + err + message
        assert not any(secret.encode() in p.read_bytes() for p in files)
