"""A local stand-in for the Hugging Face Hub: the endpoints huggingface_hub 2.4 uses to push a folder.

Implemented (paths as huggingface_hub builds them, see hf_api.py, _commit_api.py and lfs.py):
  POST /api/repos/create                                  create_repo (409 when it exists)
  POST /api/validate-yaml                                 README.md metadata check
  GET  /api/whoami-v2                                     whoami
  GET  /api/models/<ns>/<name>[/revision/<rev>]           repo_info
  POST /api/models/<ns>/<name>/branch/<branch>            create_branch (409 when it exists)
  PUT  /api/models/<ns>/<name>/settings                   update_repo_settings (visibility)
  POST /api/models/<ns>/<name>/preupload/<rev>            "regular" or "lfs" per file, like the Hub
  POST /<ns>/<name>.git/info/lfs/objects/batch            LFS batch: hands out an upload URL per object
  PUT  /lfs-upload/<oid>                                  the presigned "S3" URL (no auth, like S3)
  POST /lfs-verify                                        LFS verify
  POST /api/models/<ns>/<name>/commit/<rev>               NDJSON commit: header / file / lfsFile lines
  GET  /<ns>/<name>/resolve/<rev>/<path>                  raw file download

Every request is recorded (method, path, headers, body). Requests without ``Bearer <token>`` get the
Hub's 401; ``outage = 503`` makes every request fail as during a Hub outage. Xet storage is not
implemented: tests disable it (``constants.HF_HUB_DISABLE_XET``) so huggingface_hub takes the classic
LFS path.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

import yaml

# The Hub stores files over 10 MB, binary files and the patterns of its default .gitattributes in LFS.
LFS_THRESHOLD = 10 * 1024 * 1024
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx", ".zip", ".gz")
USER = "tester"


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Repo:
    private: bool
    # branch -> {path: content}; LFS files are stored by content too, so downloads are byte-exact.
    branches: dict[str, dict[str, bytes]] = field(default_factory=lambda: {"main": {}})
    commits: dict[str, str] = field(default_factory=lambda: {"main": uuid.uuid4().hex + "00000000"})


class FakeHub:
    """State of the fake Hub plus the HTTP server that serves it on 127.0.0.1 (a free port)."""

    def __init__(self, token: str):
        self.token = token
        self.repos: dict[str, Repo] = {}
        self.lfs_objects: dict[str, bytes] = {}  # sha256 hex -> content
        self.requests: list[Request] = []
        self.outage: int | None = None  # set to e.g. 503 to answer every request with that status
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        return dict(self.repos[repo_id].branches[revision])

    # ---- routing ----------------------------------------------------------------------------
    def handle(self, req: Request) -> tuple[int, dict, bytes | dict]:
        """Return (status, extra headers, body) for one request."""
        path = urlsplit(req.path).path
        if self.outage:
            return self.outage, {}, {"error": "fake hub: service unavailable"}
        if req.method == "PUT" and path.startswith("/lfs-upload/"):
            return self.lfs_upload(path.rsplit("/", 1)[1], req.body)  # presigned: no Authorization
        if req.headers.get("authorization") != f"Bearer {self.token}":
            message = "Invalid credentials in Authorization header"
            return 401, {"X-Error-Message": message}, {"error": message}
        routes = [
            ("POST", r"/api/repos/create", self.create_repo),
            ("POST", r"/api/validate-yaml", self.validate_yaml),
            ("GET", r"/api/whoami-v2", self.whoami),
            ("GET", r"/api/models/(?P<repo>[^/]+/[^/]+)(/revision/(?P<rev>[^/]+))?", self.repo_info),
            ("POST", r"/api/models/(?P<repo>[^/]+/[^/]+)/branch/(?P<rev>[^/]+)", self.create_branch),
            ("PUT", r"/api/models/(?P<repo>[^/]+/[^/]+)/settings", self.update_settings),
            ("POST", r"/api/models/(?P<repo>[^/]+/[^/]+)/preupload/(?P<rev>[^/]+)", self.preupload),
            ("POST", r"/api/models/(?P<repo>[^/]+/[^/]+)/commit/(?P<rev>[^/]+)", self.commit),
            ("POST", r"/(?P<repo>[^/]+/[^/]+)\.git/info/lfs/objects/batch", self.lfs_batch),
            ("POST", r"/lfs-verify", self.lfs_verify),
            ("GET", r"/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)", self.resolve),
        ]
        for method, pattern, handler in routes:
            match = re.fullmatch(pattern, path)
            if req.method == method and match:
                args = {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
                with self.lock:
                    return handler(req, **args)
        return 404, {}, {"error": f"fake hub: no route for {req.method} {path}"}

    def _repo(self, repo: str, rev: str | None = None) -> tuple[int, dict, dict] | None:
        """The Hub's 404 answer when a repo or a revision does not exist, else None."""
        if repo not in self.repos:
            return 404, {"X-Error-Code": "RepoNotFound"}, {"error": "Repository not found"}
        if rev is not None and rev not in self.repos[repo].branches:
            return 404, {"X-Error-Code": "RevisionNotFound"}, {"error": f"Invalid rev id: {rev}"}
        return None

    # ---- repos and branches -----------------------------------------------------------------
    def create_repo(self, req: Request) -> tuple[int, dict, dict]:
        payload = json.loads(req.body)
        repo_id = f"{payload.get('organization') or USER}/{payload['name']}"
        url = {"url": f"{self.url}/{repo_id}", "name": repo_id, "id": repo_id}
        if repo_id in self.repos:
            return 409, {}, {"error": "You already created this model repo", **url}
        self.repos[repo_id] = Repo(private=payload.get("visibility") == "private")
        return 200, {}, url

    def create_branch(self, req: Request, repo: str, rev: str) -> tuple[int, dict, dict]:
        if error := self._repo(repo):
            return error
        branches = self.repos[repo].branches
        if rev in branches:
            return 409, {}, {"error": f"Reference already exists: refs/heads/{rev}"}
        start = json.loads(req.body or b"{}").get("startingPoint") or "main"
        branches[rev] = dict(branches[start])
        self.repos[repo].commits[rev] = self.repos[repo].commits[start]
        return 200, {}, {}

    def repo_info(self, req: Request, repo: str, rev: str = "main") -> tuple[int, dict, dict]:
        if error := self._repo(repo, rev):
            return error
        info = self.repos[repo]
        siblings = [{"rfilename": name} for name in sorted(info.branches[rev])]
        return 200, {}, {"id": repo, "sha": info.commits[rev], "private": info.private, "siblings": siblings}

    def update_settings(self, req: Request, repo: str) -> tuple[int, dict, dict]:
        if error := self._repo(repo):
            return error
        payload = json.loads(req.body)
        if "visibility" in payload or "private" in payload:
            self.repos[repo].private = (
                payload.get("visibility", "private" if payload.get("private") else "public") == "private"
            )
        return 200, {}, {}

    def whoami(self, req: Request) -> tuple[int, dict, dict]:
        return 200, {}, {"type": "user", "name": USER, "auth": {"type": "access_token"}}

    def validate_yaml(self, req: Request) -> tuple[int, dict, dict]:
        content = json.loads(req.body)["content"]
        match = re.match(r"^---\n(.*?)\n---\n", content, re.DOTALL)
        try:
            metadata = yaml.safe_load(match.group(1)) if match else None
        except yaml.YAMLError as exc:
            return 400, {}, {"errors": [{"message": f"invalid YAML: {exc}"}]}
        warnings = [] if isinstance(metadata, dict) else [{"message": "empty or missing yaml metadata"}]
        return 200, {}, {"errors": [], "warnings": warnings}

    def resolve(self, req: Request, repo: str, rev: str, file: str) -> tuple[int, dict, bytes | dict]:
        if error := self._repo(repo, rev):
            return error
        content = self.repos[repo].branches[rev].get(file)
        if content is None:
            return 404, {"X-Error-Code": "EntryNotFound"}, {"error": "Entry not found"}
        return 200, {"Content-Type": "application/octet-stream"}, content

    # ---- uploads ----------------------------------------------------------------------------
    def preupload(self, req: Request, repo: str, rev: str) -> tuple[int, dict, dict]:
        if error := self._repo(repo, rev):
            return error
        stored = self.repos[repo].branches[rev]
        answers = []
        for f in json.loads(req.body)["files"]:
            lfs = is_lfs(f["path"], f["size"], base64.b64decode(f["sample"]))
            old = stored.get(f["path"])
            oid = None if old is None else (hashlib.sha256(old).hexdigest() if lfs else git_blob_sha1(old))
            answers.append(
                {
                    "path": f["path"],
                    "uploadMode": "lfs" if lfs else "regular",
                    "shouldIgnore": False,
                    "oid": oid,
                }
            )
        return 200, {}, {"files": answers}

    def lfs_batch(self, req: Request, repo: str) -> tuple[int, dict, dict]:
        if error := self._repo(repo):
            return error
        objects = []
        for obj in json.loads(req.body)["objects"]:
            entry = {"oid": obj["oid"], "size": obj["size"]}
            if obj["oid"] not in self.lfs_objects:  # already stored: no "actions", nothing to upload
                entry["actions"] = {
                    "upload": {"href": f"{self.url}/lfs-upload/{obj['oid']}"},
                    "verify": {"href": f"{self.url}/lfs-verify"},
                }
            objects.append(entry)
        return (
            200,
            {"Content-Type": "application/vnd.git-lfs+json"},
            {"transfer": "basic", "objects": objects},
        )

    def lfs_upload(self, oid: str, body: bytes) -> tuple[int, dict, dict]:
        if hashlib.sha256(body).hexdigest() != oid:
            return 400, {}, {"error": "content does not match its sha256"}
        with self.lock:
            self.lfs_objects[oid] = body
        return 200, {"ETag": f'"{oid[:32]}"'}, {}

    def lfs_verify(self, req: Request) -> tuple[int, dict, dict]:
        obj = json.loads(req.body)
        content = self.lfs_objects.get(obj["oid"])
        if content is None or len(content) != obj["size"]:
            return 404, {}, {"error": f"object {obj['oid']} not uploaded"}
        return 200, {}, {}

    def commit(self, req: Request, repo: str, rev: str) -> tuple[int, dict, dict]:
        if error := self._repo(repo, rev):
            return error
        new_files = dict(self.repos[repo].branches[rev])
        for line in req.body.splitlines():
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "file":
                new_files[value["path"]] = base64.b64decode(value["content"])
            elif key == "lfsFile":
                if value["oid"] not in self.lfs_objects:
                    return 400, {}, {"error": f"LFS object {value['oid']} was never uploaded"}
                new_files[value["path"]] = self.lfs_objects[value["oid"]]
            elif key == "deletedFile":
                new_files.pop(value["path"], None)
        self.repos[repo].branches[rev] = new_files  # a commit applies as a whole or not at all
        oid = uuid.uuid4().hex + "00000000"
        self.repos[repo].commits[rev] = oid
        return (
            200,
            {},
            {"commitUrl": f"{self.url}/{repo}/commit/{oid}", "commitOid": oid, "pullRequestUrl": None},
        )


def is_lfs(path: str, size: int, sample: bytes) -> bool:
    return size > LFS_THRESHOLD or path.endswith(LFS_SUFFIXES) or b"\x00" in sample


def git_blob_sha1(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def _make_handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as httpx expects from the Hub

        def _serve(self) -> None:
            req = Request(
                self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, self._body()
            )
            with hub.lock:
                hub.requests.append(req)
            status, headers, body = hub.handle(req)
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            headers.setdefault("Content-Type", "application/json")
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while size := int(self.rfile.readline().split(b";")[0], 16):
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                self.rfile.readline()
                return b"".join(chunks)
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        do_GET = do_POST = do_PUT = _serve

        def log_message(self, *args) -> None:  # keep the test output quiet
            pass

    return Handler


def hub_environment(monkeypatch, tmp_path) -> None:
    """A user online with no saved login; xet off (the fake Hub speaks classic LFS only).
    huggingface_hub reads these once at import: the constants are patched as well as the environment."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-saved-token"))
