"""A Vertex-AI-shaped HTTP server on 127.0.0.1 for tests and benchmarks.

It speaks the REST paths and JSON that google-genai (generateContent, tuningJobs) and
google-cloud-aiplatform's REST transport (Endpoint / Model get, undeploy, delete) send, so
the real SDKs run unpatched against it. Tuning jobs move through their states on a clock
(time since creation), answers are deterministic, and faults are injected from a seeded RNG.

Run standalone: ``python -m tests.servers.vertex_server --port 0 --latency 0.25`` prints the
base URL as its first stdout line and serves until SIGTERM.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import itertools
import json
import math
import random
import re
import shlex
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    408: "DEADLINE_EXCEEDED",
    409: "ALREADY_EXISTS",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_LABEL_KEY = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_LABEL_VALUE = re.compile(r"^[a-z0-9_-]{0,63}$")
_FILTER_TERM = re.compile(r'^labels\.([a-z][a-z0-9_-]*)\s*=\s*("?)([a-z0-9_-]*)\2$')
_WORDS_BASE = 20


class _HttpError(Exception):
    def __init__(self, code: int, message: str, status: str | None = None):
        super().__init__(message)
        self.code, self.message = code, message
        self.status = status or _STATUS_NAMES.get(code, "UNKNOWN")


def _now_rfc3339(t: float) -> str:
    return _dt.datetime.fromtimestamp(t, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _article(prompt: str) -> str:
    """The part of a prompt after 'article:' (the codelab's prompt shape), else all of it."""
    m = re.search(r"article:\s*", prompt, flags=re.IGNORECASE)
    return (prompt[m.end():] if m else prompt).strip()


def _first_sentence(text: str) -> str:
    m = re.search(r"[.!?](\s|$)", text)
    return (text[: m.start() + 1] if m else text).strip()


@dataclass
class _Job:
    number: int
    name: str
    created: float
    phases: tuple[float, float]
    outcome: str
    body: dict[str, Any]
    labels: dict[str, str]
    model: str
    endpoint: str
    examples: int
    cancelled_at: float | None = None

    def state(self, now: float) -> str:
        if self.cancelled_at is not None:
            return "CANCELLED"
        t = now - self.created
        if t < self.phases[0]:
            return "PENDING"
        if t < self.phases[0] + self.phases[1]:
            return "RUNNING"
        return self.outcome

    def end_time(self) -> float:
        if self.cancelled_at is not None:
            return self.cancelled_at
        return self.created + self.phases[0] + self.phases[1]


@dataclass
class _Endpoint:
    name: str
    job: _Job
    deployed: dict[str, str] = field(default_factory=dict)  # deployed model id -> model name
    deleted: bool = False


@dataclass
class _Model:
    name: str  # without @version
    job: _Job
    deleted: bool = False


class VertexTestServer:
    """A threaded Vertex-shaped server; see tests/servers README in the module docstring."""

    def __init__(
        self,
        *,
        latency_s: float = 0.0,
        fault_rate: float = 0.0,
        fault_codes=(429, 503),
        seed: int = 0,
        job_phases: tuple[float, float] = (1.0, 2.0),
        job_outcome: str = "SUCCEEDED",
        project: str = "test-project",
        location: str = "us-central1",
        port: int = 0,
        dataset_examples: int = 100,
        require_token: str | None = None,
    ):
        if job_outcome not in ("SUCCEEDED", "FAILED", "CANCELLED"):
            raise ValueError(f"job_outcome: expected SUCCEEDED, FAILED or CANCELLED, got {job_outcome!r}")
        self.latency_s = latency_s
        self.job_phases = tuple(job_phases)
        self.job_outcome = job_outcome
        self.project, self.location = project, location
        self.dataset_examples = dataset_examples
        self.require_token = require_token
        self.requests: list[dict] = []
        self.base_url = ""
        self._port = port
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._fault_rate, self._fault_codes = 0.0, (429, 503)
        self.set_faults(fault_rate, fault_codes)
        self._ids = itertools.count(1000)
        self._jobs: dict[str, _Job] = {}
        self._endpoints: dict[str, _Endpoint] = {}
        self._models: dict[str, _Model] = {}
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> VertexTestServer:
        server = self

        class Handler(_Handler):
            owner = server

        self._httpd = ThreadingHTTPServer(("127.0.0.1", self._port), Handler)
        self._httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), name="vertex-test-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> VertexTestServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ test helpers
    def set_faults(self, fault_rate: float, fault_codes=(429, 503)) -> None:
        if not 0.0 <= fault_rate <= 1.0:
            raise ValueError(f"fault_rate: expected 0..1, got {fault_rate}")
        if fault_rate and not fault_codes:
            raise ValueError("fault_codes: at least one code is needed when fault_rate > 0")
        with self._lock:
            self._fault_rate, self._fault_codes = fault_rate, tuple(fault_codes)

    def count(self, method: str, path_contains: str) -> int:
        """Requests with this method whose path (or path?query) contains `path_contains`."""
        with self._lock:
            return sum(
                1
                for r in self.requests
                if r["method"] == method.upper()
                and (path_contains in r["path"] or path_contains in f"{r['path']}?{r['query']}")
            )

    @property
    def job_names(self) -> list[str]:
        with self._lock:
            return list(self._jobs)

    # ------------------------------------------------------------------ dispatch
    def _handle(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> tuple[int, dict]:
        if self.latency_s:
            time.sleep(self.latency_s)
        with self._lock:
            if self._fault_rate and self._rng.random() < self._fault_rate:
                code = self._rng.choice(self._fault_codes)
                raise _HttpError(code, f"Injected fault {code} (test server)")
        m = re.match(r"^/(v1|v1beta1)/projects/([^/]+)/locations/([^/]+)/(.*)$", path)
        if not m:
            raise _HttpError(404, f"Unknown path {path}")
        _, project, location, rest = m.groups()
        if (project, location) != (self.project, self.location):
            raise _HttpError(
                404, f"Project/location {project}/{location} not served (this server: {self.project}/{self.location})"
            )
        parent = f"projects/{project}/locations/{location}"
        routes = [
            ("POST", r"publishers/google/models/([^/:]+):generateContent", self._generate_base),
            ("POST", r"endpoints/([^/:]+):generateContent", self._generate_endpoint),
            ("POST", r"tuningJobs", self._create_job),
            ("GET", r"tuningJobs", self._list_jobs),
            ("GET", r"tuningJobs/([^/:]+)", self._get_job),
            ("POST", r"tuningJobs/([^/:]+):cancel", self._cancel_job),
            ("GET", r"endpoints/([^/:]+)", self._get_endpoint),
            ("POST", r"endpoints/([^/:]+):undeployModel", self._undeploy),
            ("DELETE", r"endpoints/([^/:]+)", self._delete_endpoint),
            ("GET", r"models/([^/:@]+)(?:@([^/:]+))?", self._get_model),
            ("DELETE", r"models/([^/:@]+)(?:@([^/:]+))?", self._delete_model),
            ("DELETE", r"models/([^/:@]+)@([^/:]+):deleteVersion", self._delete_model),
        ]
        for meth, pattern, fn in routes:
            mm = re.fullmatch(pattern, rest)
            if mm and meth == method:
                return 200, fn(parent, *mm.groups(), query=query, body=body)
        raise _HttpError(404, f"No route for {method} {path}")

    # ------------------------------------------------------------------ generateContent
    @staticmethod
    def _prompt(body: Any) -> tuple[str, dict]:
        if not isinstance(body, dict) or not isinstance(body.get("contents"), list) or not body["contents"]:
            raise _HttpError(400, "contents: at least one Content is required")
        texts = []
        for content in body["contents"]:
            for part in content.get("parts") or []:
                if "text" in part:
                    texts.append(part["text"])
        return "\n".join(texts), body.get("generationConfig") or {}

    def _answer(self, prompt: str, text: str, config: dict, model: str) -> dict:
        usage_in = max(1, len(prompt) // 4)
        if "[[BLOCK]]" in prompt:
            return {
                "promptFeedback": {
                    "blockReason": "SAFETY",
                    "safetyRatings": [
                        {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": True}
                    ],
                },
                "usageMetadata": {"promptTokenCount": usage_in, "totalTokenCount": usage_in},
                "modelVersion": model,
            }
        if "[[EMPTY]]" in prompt:
            return {
                "candidates": [{"content": {"role": "model"}, "finishReason": "STOP"}],
                "usageMetadata": {"promptTokenCount": usage_in, "totalTokenCount": usage_in},
                "modelVersion": model,
            }
        words = text.split()
        finish = "STOP"
        limit = int(config.get("maxOutputTokens") or 0)
        if limit and len(words) > limit:
            words, finish = words[:limit], "MAX_TOKENS"
        out = " ".join(words)
        usage_out = max(1, len(out) // 4)
        return {
            "candidates": [
                {"content": {"role": "model", "parts": [{"text": out}]}, "finishReason": finish, "index": 0}
            ],
            "usageMetadata": {
                "promptTokenCount": usage_in,
                "candidatesTokenCount": usage_out,
                "totalTokenCount": usage_in + usage_out,
            },
            "modelVersion": model,
        }

    def _generate_base(self, parent, model, *, query, body):
        prompt, config = self._prompt(body)
        text = " ".join(_article(prompt).split()[:_WORDS_BASE])
        return self._answer(prompt, text, config, model)

    def _generate_endpoint(self, parent, eid, *, query, body):
        name = f"{parent}/endpoints/{eid}"
        with self._lock:
            ep = self._endpoints.get(name)
            if ep is not None and ep.deleted:
                raise _HttpError(404, f"Endpoint `{name}` not found.")
        prompt, config = self._prompt(body)
        return self._answer(prompt, _first_sentence(_article(prompt)), config, name)

    # ------------------------------------------------------------------ tuning jobs
    def _create_job(self, parent, *, query, body):
        if not isinstance(body, dict) or not body.get("baseModel"):
            raise _HttpError(400, "baseModel: required")
        spec = body.get("supervisedTuningSpec") or {}
        for field_name in ("trainingDatasetUri", "validationDatasetUri"):
            uri = spec.get(field_name)
            if field_name == "trainingDatasetUri" and not uri:
                raise _HttpError(400, "supervisedTuningSpec.trainingDatasetUri: required")
            if uri and not (uri.startswith("gs://") and uri.endswith(".jsonl")):
                raise _HttpError(400, f"{field_name} should be a GCS object of type JSONL, got {uri!r}")
        labels = body.get("labels") or {}
        for k, v in labels.items():
            if not _LABEL_KEY.match(k) or not isinstance(v, str) or not _LABEL_VALUE.match(v):
                raise _HttpError(400, f"labels: invalid label {k!r}={v!r} (lowercase letters, digits, _ and -, ≤63)")
        with self._lock:
            num, mid, eid = next(self._ids), next(self._ids), next(self._ids)
            job = _Job(
                number=num,
                name=f"{parent}/tuningJobs/{num}",
                created=time.time(),
                phases=self.job_phases,
                outcome=self.job_outcome,
                body=body,
                labels=dict(labels),
                model=f"{parent}/models/{mid}",
                endpoint=f"{parent}/endpoints/{eid}",
                examples=self.dataset_examples,
            )
            self._jobs[job.name] = job
            self._models[job.model] = _Model(job.model, job)
            self._endpoints[job.endpoint] = _Endpoint(job.endpoint, job, {f"{mid}1": job.model})
            return self._job_json(job, time.time())

    def _job_json(self, job: _Job, now: float) -> dict:
        state = job.state(now)
        spec = job.body.get("supervisedTuningSpec") or {}
        out: dict[str, Any] = {
            "name": job.name,
            "baseModel": job.body.get("baseModel"),
            "tunedModelDisplayName": job.body.get("tunedModelDisplayName"),
            "supervisedTuningSpec": spec,
            "state": f"JOB_STATE_{state}",
            "createTime": _now_rfc3339(job.created),
            "updateTime": _now_rfc3339(min(now, job.end_time())),
        }
        if job.labels:
            out["labels"] = job.labels
        if state != "PENDING" and not (state == "CANCELLED" and job.cancelled_at - job.created < job.phases[0]):
            epochs = int((spec.get("hyperParameters") or {}).get("epochCount") or 1)
            tokens = job.examples * 250 * epochs
            out["startTime"] = _now_rfc3339(job.created + job.phases[0])
            out["experiment"] = f"{job.name.split('/tuningJobs/')[0]}/metadataStores/default/contexts/tuning-experiment-{job.number}"
            out["tuningDataStats"] = {
                "supervisedTuningDataStats": {
                    "tuningDatasetExampleCount": str(job.examples),
                    "totalTuningCharacterCount": str(tokens * 4 // epochs),
                    "totalBillableCharacterCount": str(tokens * 4),
                    "totalBillableTokenCount": str(tokens),
                    "tuningStepCount": str(math.ceil(job.examples * epochs / 16)),
                }
            }
        if state in ("SUCCEEDED", "FAILED", "CANCELLED"):
            out["endTime"] = _now_rfc3339(job.end_time())
        if state == "SUCCEEDED":
            out["tunedModel"] = {"model": f"{job.model}@1", "endpoint": job.endpoint}
        elif state == "FAILED":
            out["error"] = {"code": 3, "message": "Dataset row 3: invalid role"}
        elif state == "CANCELLED":
            out["error"] = {"code": 1, "message": "CANCELED"}
        return out

    def _job(self, parent: str, num: str) -> _Job:
        name = f"{parent}/tuningJobs/{num}"
        job = self._jobs.get(name)
        if job is None:
            raise _HttpError(404, f"TuningJob `{name}` not found.")
        return job

    def _get_job(self, parent, num, *, query, body):
        with self._lock:
            return self._job_json(self._job(parent, num), time.time())

    def _cancel_job(self, parent, num, *, query, body):
        with self._lock:
            job = self._job(parent, num)
            now = time.time()
            state = job.state(now)
            if state in ("SUCCEEDED", "FAILED", "CANCELLED"):
                raise _HttpError(
                    400, f"Cannot cancel TuningJob `{job.name}` in state JOB_STATE_{state}.", "FAILED_PRECONDITION"
                )
            job.cancelled_at = now
            return {}

    def _list_jobs(self, parent, *, query, body):
        wanted = _parse_filter((query.get("filter") or [""])[0])
        page_size = int((query.get("pageSize") or ["100"])[0] or 100)
        offset = int((query.get("pageToken") or ["0"])[0] or 0)
        now = time.time()
        with self._lock:
            jobs = [
                j
                for j in sorted(self._jobs.values(), key=lambda j: (j.created, j.number), reverse=True)
                if all(j.labels.get(k) == v for k, v in wanted.items())
            ]
            page = [self._job_json(j, now) for j in jobs[offset : offset + page_size]]
        out: dict[str, Any] = {"tuningJobs": page} if page else {}
        if offset + page_size < len(jobs):
            out["nextPageToken"] = str(offset + page_size)
        return out

    # ------------------------------------------------------------------ endpoints & models
    def _visible(self, job: _Job) -> bool:
        return job.state(time.time()) == "SUCCEEDED"

    def _endpoint(self, parent: str, eid: str) -> _Endpoint:
        name = f"{parent}/endpoints/{eid}"
        ep = self._endpoints.get(name)
        if ep is None or ep.deleted or not self._visible(ep.job):
            raise _HttpError(404, f"Endpoint `{name}` not found.")
        return ep

    def _endpoint_json(self, ep: _Endpoint) -> dict:
        return {
            "name": ep.name,
            "displayName": ep.job.body.get("tunedModelDisplayName") or "tuned",
            "deployedModels": [{"id": did, "model": model} for did, model in ep.deployed.items()],
            "trafficSplit": {did: 100 // max(1, len(ep.deployed)) for did in ep.deployed},
            "createTime": _now_rfc3339(ep.job.end_time()),
        }

    def _get_endpoint(self, parent, eid, *, query, body):
        with self._lock:
            return self._endpoint_json(self._endpoint(parent, eid))

    def _undeploy(self, parent, eid, *, query, body):
        with self._lock:
            ep = self._endpoint(parent, eid)
            did = (body or {}).get("deployedModelId")
            if did not in ep.deployed:
                raise _HttpError(400, f"Deployed model {did!r} not found on `{ep.name}`.", "FAILED_PRECONDITION")
            del ep.deployed[did]
            return _done_op(ep.name, next(self._ids), "google.cloud.aiplatform.v1.UndeployModelResponse")

    def _delete_endpoint(self, parent, eid, *, query, body):
        with self._lock:
            ep = self._endpoint(parent, eid)
            if ep.deployed:
                raise _HttpError(
                    400, f"Endpoint `{ep.name}` has deployed models; undeploy them first.", "FAILED_PRECONDITION"
                )
            ep.deleted = True
            return _done_op(ep.name, next(self._ids), "google.protobuf.Empty")

    def _model(self, parent: str, mid: str, version: str | None) -> _Model:
        name = f"{parent}/models/{mid}"
        model = self._models.get(name)
        if model is None or model.deleted or not self._visible(model.job) or version not in (None, "1"):
            raise _HttpError(404, f"Model `{name}{'@' + version if version else ''}` not found.")
        return model

    def _get_model(self, parent, mid, version=None, *, query, body):
        with self._lock:
            model = self._model(parent, mid, version)
            deployed = [
                {"endpoint": ep.name, "deployedModelId": did}
                for ep in self._endpoints.values()
                if not ep.deleted
                for did, m in ep.deployed.items()
                if m == model.name
            ]
            return {
                "name": model.name,
                "versionId": "1",
                "versionAliases": ["default"],
                "displayName": model.job.body.get("tunedModelDisplayName") or "tuned",
                "deployedModels": deployed,
                "createTime": _now_rfc3339(model.job.end_time()),
            }

    def _delete_model(self, parent, mid, version=None, *, query, body):
        with self._lock:
            model = self._model(parent, mid, version)
            for ep in self._endpoints.values():
                if not ep.deleted and model.name in ep.deployed.values():
                    raise _HttpError(
                        400,
                        f"Model `{model.name}` is deployed to `{ep.name}`; undeploy it first.",
                        "FAILED_PRECONDITION",
                    )
            model.deleted = True
            return _done_op(model.name, next(self._ids), "google.protobuf.Empty")


def _done_op(resource: str, num: int, response_type: str) -> dict:
    """A finished long-running operation, as Vertex answers undeploy / delete calls."""
    return {
        "name": f"{resource}/operations/{num}",
        "done": True,
        "response": {"@type": f"type.googleapis.com/{response_type}"},
    }


def _parse_filter(text: str) -> dict[str, str]:
    """`labels.KEY=VALUE` / `labels.KEY="VALUE"` terms joined with AND → {KEY: VALUE}."""
    wanted: dict[str, str] = {}
    if not text.strip():
        return wanted
    for term in re.split(r"\s+AND\s+", text.strip()):
        m = _FILTER_TERM.match(term.strip())
        if not m:
            raise _HttpError(400, f"Unsupported filter term {term!r} (test server supports labels.KEY=VALUE)")
        wanted[m.group(1)] = m.group(3)
    return wanted


class _Handler(BaseHTTPRequestHandler):
    owner: VertexTestServer
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two sends; no 40 ms ACK stall

    def log_message(self, format, *args):  # noqa: A002 - keep test output quiet
        pass

    def _serve(self, method: str) -> None:
        server = self.owner
        arrived = time.time()
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body: Any = None
        entry = {
            "method": method,
            "path": unquote(parts.path),
            "query": parts.query,
            "body": None,
            "status": 0,
            "time": arrived,
            "authorized": (self.headers.get("Authorization") or "").startswith("Bearer "),
        }
        try:
            if raw:
                try:
                    body = json.loads(raw)
                except ValueError:
                    raise _HttpError(400, "Invalid JSON payload received.") from None
            entry["body"] = body
            auth = self.headers.get("Authorization") or ""
            if not auth.startswith("Bearer ") or (
                server.require_token is not None and auth != f"Bearer {server.require_token}"
            ):
                raise _HttpError(401, "Request had invalid authentication credentials.")
            code, payload = server._handle(method, entry["path"], parse_qs(parts.query), body)
        except _HttpError as exc:
            code = exc.code
            payload = {"error": {"code": exc.code, "message": exc.message, "status": exc.status}}
        except Exception as exc:  # a server bug must surface as a 500, not a hung client
            code = 500
            payload = {"error": {"code": 500, "message": f"test server error: {exc!r}", "status": "INTERNAL"}}
        entry["status"] = code
        with server._lock:
            server.requests.append(entry)
        data = json.dumps(payload).encode()
        try:
            self.send_response(code)
            self.send_header("Content-Type", "application/json; charset=UTF-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
            pass

    def do_GET(self):  # noqa: N802
        self._serve("GET")

    def do_POST(self):  # noqa: N802
        self._serve("POST")

    def do_DELETE(self):  # noqa: N802
        self._serve("DELETE")

    def do_PATCH(self):  # noqa: N802
        self._serve("PATCH")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--latency", type=float, default=0.0, help="seconds added to every answer")
    p.add_argument("--fault-rate", type=float, default=0.0)
    p.add_argument("--fault-codes", default="429,503")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--job-phases", default="1.0,2.0", help="seconds PENDING,RUNNING")
    p.add_argument("--job-outcome", default="SUCCEEDED", choices=["SUCCEEDED", "FAILED", "CANCELLED"])
    p.add_argument("--project", default="test-project")
    p.add_argument("--location", default="us-central1")
    a = p.parse_args(argv)
    server = VertexTestServer(
        latency_s=a.latency,
        fault_rate=a.fault_rate,
        fault_codes=tuple(int(c) for c in a.fault_codes.split(",") if c),
        seed=a.seed,
        job_phases=tuple(float(x) for x in a.job_phases.split(",")),
        job_outcome=a.job_outcome,
        project=a.project,
        location=a.location,
        port=a.port,
    ).start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(server.base_url, flush=True)
    print(f"serving {shlex.join(sys.argv[1:])} (SIGTERM stops)", file=sys.stderr, flush=True)
    stop.wait()
    server.stop()


if __name__ == "__main__":
    main()
