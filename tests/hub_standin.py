"""A local stand-in for the Hub's HTTP API, to check what a push really sends.

`HubStandIn` serves, on 127.0.0.1 from a thread, the endpoints that `HfApi.whoami`, `create_repo`,
`repo_info`, `auth_check(write=True)`, `create_branch` and `create_commit` / `upload_folder` call
(`/api/whoami-v2`, `/api/repos/create`, `/api/{type}s/{id}[/revision/{rev}]`, `.../auth-check/write`,
`.../branch/{name}`, `.../preupload/{rev}`, `/api/validate-yaml`, `.../commit/{rev}`), what
`DatasetDict.push_to_hub` reads on top (`.../tree/{rev}/{path}`, `resolve/{rev}/{file}`), and the Git
LFS batch protocol (`{repo}.git/info/lfs/objects/batch`, the upload URL, `.../verify`), answering the
way the Hub does (status codes, the JSON fields the client reads). As on the Hub, the preupload
answer sends binary and large files to LFS (their bytes go to the storage URL, the commit names
their sha256) and text files inline (base64 in the commit's ndjson); either way the test sees every
committed file byte for byte. The client's Xet transfer is switched off (`HF_HUB_DISABLE_XET`): the
stand-in speaks plain LFS. Every request is recorded with its headers.

Point huggingface_hub at it in-process with `standin.patch(monkeypatch)`, or in a subprocess with
`standin.env()` (`HF_ENDPOINT`, `HF_HUB_OFFLINE=0`, `HF_HUB_DISABLE_XET=1`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

REPO = r"(?P<type>model|dataset|space)s/(?P<repo>[^/]+/[^/]+)"


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body or b"null")


@dataclass
class Commit:
    repo_type: str
    repo_id: str
    revision: str
    summary: str
    files: dict[str, bytes]


@dataclass
class HubStandIn:
    """The stand-in server. `token` is the one valid token (`writable=False`: a read-only one);
    `user` and `orgs` are the namespaces it may create repos in; `fail_commits` makes every commit
    fail with a 500 (a Hub outage after the repo was created)."""

    token: str = "hf_standin_0123456789secret"
    user: str = "tester"
    orgs: tuple[str, ...] = ("org",)
    writable: bool = True
    fail_commits: bool = False
    requests: list[Request] = field(default_factory=list)
    repos: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    commits: list[Commit] = field(default_factory=list)
    lfs: dict[str, bytes] = field(default_factory=dict)  # sha256 -> bytes uploaded to LFS storage

    def __post_init__(self):
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> HubStandIn:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def patch(self, monkeypatch) -> None:
        """Point this process's huggingface_hub (and datasets) at the stand-in, online, with no saved
        token: what `HF_ENDPOINT` does at import time, for every constant derived from it."""
        import datasets.config
        from huggingface_hub import constants

        monkeypatch.setattr(constants, "ENDPOINT", self.endpoint)
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", self.endpoint + "/{repo_id}/resolve/{revision}/{filename}")
        monkeypatch.setattr(constants, "HF_URL_HOSTS", constants.HF_URL_HOSTS | {"127.0.0.1"})
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
        monkeypatch.setattr(datasets.config, "HF_ENDPOINT", self.endpoint)
        monkeypatch.setattr(datasets.config, "HUB_DATASETS_URL", self.endpoint + "/datasets/{repo_id}/resolve/{revision}/{path}")
        monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
        monkeypatch.delenv("HF_TOKEN", raising=False)
        monkeypatch.setattr(constants, "HF_TOKEN_PATH", "/nonexistent/hf-token")
        monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", "/nonexistent/hf-stored-tokens")

    def env(self) -> dict[str, str]:
        """Environment variables that point a subprocess at the stand-in."""
        return {"HF_ENDPOINT": self.endpoint, "HF_HUB_OFFLINE": "0", "HF_TOKEN_PATH": "/nonexistent/hf-token",
                "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_XET": "1"}

    def add_repo(self, repo_id: str, private: bool, repo_type: str = "model") -> None:
        # A branch is its head commit; `snapshots` maps every commit sha to the files it holds.
        root = hashlib.sha1(repo_id.encode()).hexdigest()
        self.repos[(repo_type, repo_id)] = {"private": private, "branches": {"main": root}, "snapshots": {root: {}}}

    def files(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> dict[str, bytes]:
        """The files of a branch (or commit) of a repo."""
        return _files(self.repos[(repo_type, repo_id)], revision)

    def api_requests(self) -> list[Request]:
        """The requests to the Hub's API: neither the client's public agent-registry lookup nor the
        uploads to LFS storage (`storage_requests`)."""
        return [r for r in self.requests if r.path != "/api/agent-harnesses" and not r.path.startswith("/lfs-storage/")]

    def storage_requests(self) -> list[Request]:
        """The uploads to the LFS storage URLs (which, like S3's pre-signed URLs, take no token)."""
        return [r for r in self.requests if r.path.startswith("/lfs-storage/")]


def _handler(hub: HubStandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # keep pytest output clean
            pass

        def _reply(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
            raw = isinstance(payload, RawBody)
            body = payload.content if raw else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/octet-stream" if raw else "application/json")
            self.send_header("Content-Length", str(len(body)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() != "chunked":
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            self.rfile.readline()
            return b"".join(chunks)

        def _handle(self, method: str) -> None:
            headers = {key.lower(): value for key, value in self.headers.items()}
            request = Request(method, unquote(urlsplit(self.path).path), headers, self._body())
            hub.requests.append(request)
            if (method, request.path) == ("GET", "/api/agent-harnesses"):  # public: the client's agent registry
                self._reply(200, {"standardEnvVars": [], "harnesses": {}})
                return
            storage = re.fullmatch(r"/lfs-storage/(?P<oid>[0-9a-f]{64})", request.path)
            if method == "PUT" and storage:  # a pre-signed storage URL: no Authorization header, as on S3
                self._reply(*_store(hub, storage["oid"], request.body))
                return
            if self.headers.get("Authorization") != f"Bearer {hub.token}":
                self._reply(401, {"error": "Invalid credentials in Authorization header"})
                return
            status, payload, headers = _route(hub, request)
            self._reply(status, payload, headers)

        def do_GET(self) -> None:
            self._handle("GET")

        def do_HEAD(self) -> None:
            self._handle("HEAD")

        def do_PUT(self) -> None:
            self._handle("PUT")

        def do_POST(self) -> None:
            self._handle("POST")

    return Handler


def _route(hub: HubStandIn, request: Request) -> tuple[int, Any, dict[str, str] | None]:
    method, path = request.method, request.path
    if (method, path) == ("GET", "/api/whoami-v2"):
        role = "write" if hub.writable else "read"
        return 200, {"type": "user", "name": hub.user, "orgs": [{"name": org} for org in hub.orgs],
                     "auth": {"type": "access_token", "accessToken": {"displayName": "standin", "role": role}}}, None
    if (method, path) == ("POST", "/api/repos/create"):
        return _create_repo(hub, request.json())
    if (method, path) == ("POST", "/api/validate-yaml"):
        return 200, {"errors": [], "warnings": []}, None
    batch = re.fullmatch(r"/(?:(?P<type>dataset|space)s/)?(?P<repo>[^/]+/[^/]+)\.git/info/lfs/objects/(?P<op>batch|verify)", path)
    if method == "POST" and batch:
        return _lfs(hub, (batch["type"] or "model", batch["repo"]), batch["op"], request.json())
    download = re.fullmatch(r"/(?:(?P<type>dataset|space)s/)?(?P<repo>[^/]+/[^/]+)/resolve/(?P<revision>[^/]+)/(?P<file>.+)", path)
    if download:
        return _download(hub, (download["type"] or "model", download["repo"]), download["revision"], download["file"])
    match = re.fullmatch(rf"/api/{REPO}(?P<rest>/.*)?", path)
    if match is None:
        return 404, {"error": f"stand-in: no route for {method} {path}"}, None
    key, rest = (match["type"], match["repo"]), match["rest"] or ""
    repo = hub.repos.get(key)
    if repo is None:
        return 404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"}
    info = re.fullmatch(r"(?:/revision/(?P<revision>[^/]+))?", rest)
    if method == "GET" and info:
        files = _files(repo, info["revision"] or "main")
        if files is None:
            return 404, {"error": "Invalid rev id"}, {"X-Error-Code": "RevisionNotFound"}
        siblings = [{"rfilename": path} for path in sorted(files)]
        sha = repo["branches"].get(info["revision"] or "main", info["revision"])
        return 200, {"id": key[1], "private": repo["private"], "sha": sha, "siblings": siblings}, None
    tree = re.fullmatch(r"/tree/(?P<revision>[^/]+)(?:/(?P<folder>.*))?", rest)
    if method == "GET" and tree:
        return _tree(repo, tree["revision"], tree["folder"] or "")
    if (method, rest) == ("GET", "/auth-check/write"):
        return (200, {}, None) if hub.writable else (403, {"error": "You don't have write access"}, None)
    if not hub.writable:
        return 403, {"error": "This token is read-only"}, None
    branch = re.fullmatch(r"/branch/(?P<name>.+)", rest)
    if method == "POST" and branch:
        if branch["name"] in repo["branches"]:
            return 409, {"error": "Reference already exists"}, None
        repo["branches"][branch["name"]] = repo["branches"]["main"]
        return 200, {}, None
    upload = re.fullmatch(r"/(?P<kind>preupload|commit)/(?P<revision>.+)", rest)
    if method == "POST" and upload:
        if upload["revision"] not in repo["branches"]:
            return 404, {"error": "Invalid rev id"}, {"X-Error-Code": "RevisionNotFound"}
        if upload["kind"] == "preupload":
            files = request.json()["files"]
            return 200, {"files": [{"path": f["path"], "uploadMode": _upload_mode(f), "shouldIgnore": False}
                                   for f in files]}, None
        return _commit(hub, key, upload["revision"], request.body)
    return 404, {"error": f"stand-in: no route for {method} {path}"}, None


def _create_repo(hub: HubStandIn, payload: dict) -> tuple[int, Any, None]:
    namespace = payload.get("organization") or hub.user
    repo_type = payload.get("type") or "model"
    repo_id = f"{namespace}/{payload['name']}"
    prefix = "" if repo_type == "model" else f"{repo_type}s/"
    url = f"{hub.endpoint}/{prefix}{repo_id}"
    if (repo_type, repo_id) in hub.repos:
        return 409, {"error": f"You already created this {repo_type} repo", "url": url}, None
    if namespace not in (hub.user, *hub.orgs) or not hub.writable:
        return 403, {"error": f"You don't have the rights to create a {repo_type} under the namespace \"{namespace}\""}, None
    hub.add_repo(repo_id, private=payload.get("visibility") == "private", repo_type=repo_type)
    return 200, {"url": url, "name": repo_id, "id": repo_id}, None


def _commit(hub: HubStandIn, key: tuple[str, str], revision: str, body: bytes) -> tuple[int, Any, None]:
    if hub.fail_commits:
        return 500, {"error": "Internal Error - We're working hard to fix this as soon as possible!"}, None
    lines = [json.loads(line) for line in body.splitlines() if line.strip()]
    header = next(line["value"] for line in lines if line["key"] == "header")
    files = {}
    for line in lines:
        if line["key"] == "file":
            files[line["value"]["path"]] = base64.b64decode(line["value"]["content"])
        elif line["key"] == "lfsFile":
            if line["value"]["oid"] not in hub.lfs:
                return 400, {"error": f"LFS object {line['value']['oid']} was never uploaded"}, None
            files[line["value"]["path"]] = hub.lfs[line["value"]["oid"]]
        elif line["key"] != "header":
            return 400, {"error": f"stand-in: unexpected commit operation {line['key']}"}, None
    repo = hub.repos[key]
    oid = hashlib.sha1(repo["branches"][revision].encode() + body).hexdigest()
    repo["snapshots"][oid] = {**_files(repo, revision), **files}
    repo["branches"][revision] = oid
    hub.commits.append(Commit(key[0], key[1], revision, header["summary"], files))
    prefix = "" if key[0] == "model" else f"{key[0]}s/"
    return 200, {"success": True, "commitOid": oid, "commitUrl": f"{hub.endpoint}/{prefix}{key[1]}/commit/{oid}"}, None


def _upload_mode(file: dict) -> str:
    """The Hub's rule in short: binary samples (a NUL byte) and files over 10 MB go to LFS."""
    binary = b"\0" in base64.b64decode(file["sample"])
    return "lfs" if binary or file["size"] > 10 * 1024 * 1024 else "regular"


def _lfs(hub: HubStandIn, key: tuple[str, str], operation: str, payload: dict) -> tuple[int, Any, dict[str, str] | None]:
    """The Git LFS batch API: upload actions for objects not stored yet, and their verification."""
    if key not in hub.repos:
        return 404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"}
    if operation == "verify":
        return (200, {}, None) if payload["oid"] in hub.lfs else (404, {"error": "Object not found"}, None)
    prefix = "" if key[0] == "model" else f"{key[0]}s/"
    verify = {"href": f"{hub.endpoint}/{prefix}{key[1]}.git/info/lfs/objects/verify"}
    objects = [
        {"oid": obj["oid"], "size": obj["size"]} if obj["oid"] in hub.lfs else
        {"oid": obj["oid"], "size": obj["size"],
         "actions": {"upload": {"href": f"{hub.endpoint}/lfs-storage/{obj['oid']}"}, "verify": verify}}
        for obj in payload["objects"]
    ]
    return 200, {"transfer": "basic", "objects": objects}, None


def _store(hub: HubStandIn, oid: str, content: bytes) -> tuple[int, Any]:
    if hashlib.sha256(content).hexdigest() != oid:
        return 400, {"error": "content does not match its sha256"}
    hub.lfs[oid] = content
    return 200, {}


def _files(repo: dict[str, Any], revision: str) -> dict[str, bytes] | None:
    return repo["snapshots"].get(repo["branches"].get(revision, revision))


def _tree(repo: dict[str, Any], revision: str, folder: str) -> tuple[int, Any, dict[str, str] | None]:
    """`list_repo_tree` of one folder, one page: its files and sub-folders."""
    files = _files(repo, revision)
    if files is None:
        return 404, {"error": "Invalid rev id"}, {"X-Error-Code": "RevisionNotFound"}
    prefix = f"{folder.strip('/')}/" if folder.strip("/") else ""
    entries: dict[str, dict] = {}
    for path, content in files.items():
        if not path.startswith(prefix):
            continue
        child = path[len(prefix):].split("/")[0]
        if "/" in path[len(prefix):]:
            entries[child] = {"type": "directory", "path": prefix + child, "oid": hashlib.sha1(child.encode()).hexdigest()}
        else:
            entries[child] = {"type": "file", "path": path, "size": len(content), "oid": hashlib.sha1(content).hexdigest()}
    if prefix and not entries:
        return 404, {"error": f"{folder} does not exist on {revision}"}, {"X-Error-Code": "EntryNotFound"}
    return 200, list(entries.values()), None


def _download(hub: HubStandIn, key: tuple[str, str], revision: str, file: str) -> tuple[int, Any, dict[str, str] | None]:
    repo = hub.repos.get(key)
    files = _files(repo, revision) if repo else None
    if files is None or file not in files:
        return 404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound" if files is not None else "RepoNotFound"}
    commit = repo["branches"].get(revision, revision)
    return 200, RawBody(files[file]), {"X-Repo-Commit": commit, "ETag": f'"{hashlib.sha1(files[file]).hexdigest()}"'}


@dataclass
class RawBody:
    """A response body sent as it is, not as JSON."""

    content: bytes
