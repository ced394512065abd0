"""A Vertex-AI-shaped HTTP server on 127.0.0.1 for tests and benchmarks, as strict as Vertex.

It speaks the REST paths and JSON that google-genai (generateContent, tuningJobs) and
google-cloud-aiplatform's REST transport (Endpoint / Model get, undeploy, delete, patch, operations) send,
so the real SDKs run unpatched against it. Every route is a method of Google's own API description
(the discovery documents, tests/servers/discovery.py): the path and verb must be one of the method's,
query parameters and the JSON body are checked against it (unknown names, wrong types, unknown enum
values → 400 INVALID_ARGUMENT in Google's words; lowerCamelCase and snake_case names both accepted),
and every answer is checked against the method's response schema. Beyond the document it refuses what
Vertex refuses (tests/servers/vertex_schema.py, each rule with its source): per-model limits, labels,
display names, a model PATCH without `updateMask`; an unknown base model, an endpoint or model that does
not exist (a tuning job creates its model and endpoint only when it SUCCEEDS) → 404; another project →
403 PERMISSION_DENIED; a missing or wrong bearer token (`require_token`, default `TEST_TOKEN`) → 401.
Tuning datasets are read from the GCS emulator at `gcs_url` and checked row by row
(tests/servers/vertex_datasets.py): a bad row fails the job naming it, and the job's
`tuningDataStats` are the rows' (tokens by `count_text_tokens`, truncation over the per-example limit).
A handler that raises, or an answer off the description, is recorded in `failures`: the fixtures fail
the test at teardown. `extra_routes` adds a route by its discovery method id.

Tuning jobs move through their states on a clock (`job_timeline`, default `job_phases` seconds
PENDING then RUNNING, then `job_outcome`); cancel passes through JOB_STATE_CANCELLING
(`cancel_delay_s`); `set_job_state` forces any state. Undeploy and delete answer long-running
operations that finish after `operation_delay_s`, polled at `GET /v1/{operation name}`. Endpoints
may hold several deployed models with a trafficSplit that routes generateContent and that undeploy
must keep valid. `deploy_tuned_model` registers a model + endpoint as a finished job leaves them.
Multi-epoch jobs keep one checkpoint per epoch (`tunedModel.checkpoints[]`: checkpointId, epoch,
step, endpoint; the last one is the job's endpoint) unless `exportLastCheckpointOnly`; each checkpoint
endpoint answers like the tuned one. `tuned_answer(hyperparameters, epoch, article)` makes answer quality
depend on the configuration (None: the article's first sentence, as without it). Models accept `:mergeVersionAliases`
as the Model Registry does, and a PATCH of `defaultCheckpointId` (google-genai `models.update`) to one of their
checkpoints; the job's `tunedModel.endpoint` is then that checkpoint's endpoint ("the tuned model endpoint represents
the endpoint of the default checkpoint",
https://cloud.google.com/vertex-ai/generative-ai/docs/models/tuning-checkpoints). `max_active_jobs()` is the most tuning jobs ever active (not ended) at once.
Answers are deterministic; marker prompts give a prompt-level block (`[[BLOCK]]`), an answer-level
SAFETY block (`[[SAFETY]]`) and an empty answer (`[[EMPTY]]`); thinking models count thought tokens
and return thought parts when asked (`thinkingConfig.includeThoughts`, or `thoughts_unasked=True`).
Faults are injected from a seeded RNG. countTokens answers a deterministic count (`count_text_tokens`:
words and punctuation marks) and refuses what generateContent refuses; `count_tokens_route=False` makes
the route absent (404 "No route"), as on an endpoint without it. Batch prediction (`batchPredictionJobs`)
lives in tests/servers/vertex_batch.py; its knobs are on `server.batch`.

Run standalone: ``python -m tests.servers.vertex_server --port 0 --latency 0.25 --gcs-url URL`` prints
the base URL as its first stdout line and serves until SIGTERM.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import inspect
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
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from tests.servers import discovery
from tests.servers import vertex_datasets
from tests.servers import vertex_schema as schema
from tests.servers.vertex_schema import field as get

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
#: A Model Registry version alias (https://cloud.google.com/vertex-ai/docs/reference/rest/v1/projects.locations.models/mergeVersionAliases).
_ALIAS = re.compile(r"^[a-z][a-zA-Z0-9-]{0,126}[a-z0-9-]$")
_FILTER_TERM = re.compile(r'^labels\.([a-z][a-z0-9_-]*)\s*=\s*("?)([a-z0-9_-]*)\2$')
_WORDS_BASE = 20

#: Publisher models generateContent answers for (configurable per server: `base_models=`).
KNOWN_BASE_MODELS = (
    "gemini-2.5-flash", "gemini-2.5-pro", "gemini-2.5-flash-lite", "gemini-2.0-flash", "gemini-2.0-flash-001",
    "gemini-2.0-flash-lite", "gemini-2.0-flash-lite-001",
)
#: Base models supervised tuning accepts (https://cloud.google.com/vertex-ai/generative-ai/docs/models/tune-models).
TUNABLE_BASE_MODELS = (
    "gemini-2.5-flash", "gemini-2.5-pro", "gemini-2.5-flash-lite", "gemini-2.0-flash-001", "gemini-2.0-flash-lite-001",
)
#: Models that think unless told `thinkingBudget: 0` (2.5 Flash and Pro think by default; Flash-Lite does not).
THINKING_BY_DEFAULT = ("gemini-2.5-flash", "gemini-2.5-pro")
#: States a job can be put in: by `job_timeline` (before the outcome), as `job_outcome`, or by `set_job_state`.
TIMELINE_STATES = ("QUEUED", "PENDING", "RUNNING", "UPDATING", "PAUSED")
OUTCOMES = ("SUCCEEDED", "FAILED", "CANCELLED", "EXPIRED", "PARTIALLY_SUCCEEDED", "PAUSED")
ENDED = ("SUCCEEDED", "FAILED", "CANCELLED", "EXPIRED", "PARTIALLY_SUCCEEDED")
#: The token the fixtures require (tests/servers/vertex_fixtures.py passes it to sftflow).
TEST_TOKEN = "test-token-s3cr3t-do-not-log"


class _HttpError(Exception):
    def __init__(self, code: int, message: str, status: str | None = None, details: list | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.code, self.message = code, message
        self.status = status or _STATUS_NAMES.get(code, "UNKNOWN")
        self.details = details
        self.headers = dict(headers or {})


def _invalid(problems: list[tuple[str, str]]) -> _HttpError:
    """400 INVALID_ARGUMENT as Google's front end answers a request it cannot parse."""
    return _HttpError(
        400,
        "\n".join(d for _, d in problems),
        details=[{"@type": "type.googleapis.com/google.rpc.BadRequest",
                  "fieldViolations": [{"field": f, "description": d} for f, d in problems]}],
    )


def _precondition(message: str) -> _HttpError:
    return _HttpError(400, message, "FAILED_PRECONDITION")


def _now_rfc3339(t: float) -> str:
    return _dt.datetime.fromtimestamp(t, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _article(prompt: str) -> str:
    """The part of a prompt after 'article:' (the codelab's prompt shape), else all of it."""
    m = re.search(r"article:\s*", prompt, flags=re.IGNORECASE)
    return (prompt[m.end():] if m else prompt).strip()


def count_text_tokens(text: str) -> int:
    """The server's deterministic tokenizer: words and punctuation marks (not characters/4, so a test
    can tell a countTokens count from the estimate)."""
    return len(re.findall(r"\w+|[^\w\s]", text))


def _first_sentence(text: str) -> str:
    m = re.search(r"[.!?](\s|$)", text)
    return (text[: m.start() + 1] if m else text).strip()


def base_answer_text(prompt: str) -> str:
    """What a base model answers (online and batch alike): the article's first words."""
    return " ".join(_article(prompt).split()[:_WORDS_BASE])


def tuned_answer_text(prompt: str) -> str:
    """What a tuned model answers (online and batch alike): the article's first sentence."""
    return _first_sentence(_article(prompt))


def _as_list(value: Any) -> list:
    return value if isinstance(value, list) else [] if value is None else [value]


@dataclass
class _Job:
    number: int
    name: str
    created: float
    timeline: tuple[tuple[str, float], ...]
    outcome: str
    body: dict[str, Any]
    labels: dict[str, str]
    model: str
    endpoint: str
    examples: int
    base_model: str
    tokens: int = 0  # the training rows' tokens (count_text_tokens), one epoch
    characters: int = 0
    truncated: list[int] = field(default_factory=list)  # 1-based indices of rows over the model's limit
    data_error: str | None = None  # a dataset row Vertex refuses: the job FAILS with this message
    cancel_delay_s: float = 0.0
    cancelled_at: float | None = None
    forced: tuple[str, float] | None = None  # (state, since) set by set_job_state
    checkpoints: list[tuple[int, str]] = field(default_factory=list)  # (epoch, endpoint), oldest first

    def state(self, now: float) -> str:
        if self.cancelled_at is not None:
            return "CANCELLING" if now - self.cancelled_at < self.cancel_delay_s else "CANCELLED"
        if self.forced is not None:
            return self.forced[0]
        t = now - self.created
        for state, seconds in self.timeline:
            if t < seconds:
                return state
            t -= seconds
        return self.outcome

    def started(self, now: float) -> float | None:
        """When the job left QUEUED / PENDING (None while it has not)."""
        t = self.created
        for state, seconds in self.timeline:
            if state not in ("QUEUED", "PENDING"):
                break
            t += seconds
        limit = self.cancelled_at if self.cancelled_at is not None else now
        return t if t <= limit and self.state(now) not in ("QUEUED", "PENDING") else None

    def end_time(self) -> float:
        if self.cancelled_at is not None:
            return self.cancelled_at + self.cancel_delay_s
        if self.forced is not None:
            return self.forced[1]
        return self.created + sum(s for _, s in self.timeline)


@dataclass
class _Model:
    name: str  # without @version
    display_name: str
    base_model: str
    job: _Job | None = None
    registered: float = 0.0
    deleted: bool = False
    aliases: list[str] = field(default_factory=list)  # version 1's aliases besides "default"
    default_checkpoint: str | None = None  # None: the last one (a multi-epoch job's checkpoints)


@dataclass
class _Endpoint:
    name: str
    display_name: str
    job: _Job | None = None
    registered: float = 0.0
    epoch: int | None = None  # a checkpoint's endpoint: the epoch it serves
    deployed: dict[str, str] = field(default_factory=dict)  # deployed model id -> model name
    traffic: dict[str, int] = field(default_factory=dict)  # deployed model id -> percent
    deleted: bool = False


@dataclass
class _Operation:
    name: str
    done_at: float
    response_type: str
    apply: Callable[[], None]
    done: bool = False


class VertexTestServer:
    """A threaded Vertex-shaped server; see the module docstring for what it checks."""

    def __init__(
        self,
        *,
        latency_s: float = 0.0,
        fault_rate: float = 0.0,
        fault_codes=(429, 503),
        seed: int = 0,
        job_phases: tuple[float, float] = (1.0, 2.0),
        job_timeline: Sequence[tuple[str, float]] | None = None,
        job_outcome: str = "SUCCEEDED",
        cancel_delay_s: float = 0.3,
        operation_delay_s: float = 0.2,
        project: str = "test-project",
        location: str = "us-central1",
        port: int = 0,
        require_token: str | None = TEST_TOKEN,
        gcs_url: str | None = None,
        base_models: Iterable[str] = KNOWN_BASE_MODELS,
        tunable_models: Iterable[str] = TUNABLE_BASE_MODELS,
        thoughts_unasked: bool = False,
        tuned_answer: Callable[[dict[str, Any], int, str], str | None] | None = None,
        count_tokens_route: bool = True,
        max_example_tokens: int | None = None,
    ):
        if job_outcome not in OUTCOMES:
            raise ValueError(f"job_outcome: expected one of {', '.join(OUTCOMES)}, got {job_outcome!r}")
        for state, _ in job_timeline or ():
            if state not in TIMELINE_STATES:
                raise ValueError(f"job_timeline: expected states among {', '.join(TIMELINE_STATES)}, got {state!r}")
        self.latency_s = latency_s
        self.job_phases = tuple(job_phases)
        self.job_timeline = tuple(job_timeline) if job_timeline is not None else None
        self.job_outcome = job_outcome
        self.cancel_delay_s = cancel_delay_s
        self.operation_delay_s = operation_delay_s
        self.project, self.location = project, location
        self.require_token = require_token  # None: any non-empty bearer token
        self.gcs_url = gcs_url.rstrip("/") if gcs_url else None
        self.base_models = tuple(base_models)
        self.tunable_models = tuple(tunable_models)
        self.thoughts_unasked = thoughts_unasked
        self.tuned_answer = tuned_answer
        self.max_example_tokens = max_example_tokens  # tokens per training example (None: the model's limit)
        self.count_tokens_route = count_tokens_route  # False: countTokens answers 404 "No route", as if absent
        self.requests: list[dict] = []
        self.failures: list[str] = []  # server bugs and answers off Google's API description (fail the test)
        self.extra_routes: list[tuple[str, Callable]] = []  # (discovery method id, handler), e.g. a judge route
        self.base_url = ""
        self._port = port
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._count_rng = random.Random(seed)  # countTokens' own fault stream: it never reshuffles the others'
        self._traffic_rng = random.Random(seed)
        self._fault_rate, self._fault_codes = 0.0, (429, 503)
        self.set_faults(fault_rate, fault_codes)
        self._ids = itertools.count(1000)
        self._prompt_faults: list[dict[str, Any]] = []
        self._jobs: dict[str, _Job] = {}
        self._endpoints: dict[str, _Endpoint] = {}
        self._models: dict[str, _Model] = {}
        self._operations: dict[str, _Operation] = {}
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        # Fault knobs for the tuning tests (set them on a started server):
        self.state_override: str | None = None  # every job reports this state, e.g. an unknown one
        self.cancel_fault: int | None = None  # :cancel answers this HTTP status instead of cancelling
        self._list_barrier: threading.Barrier | None = None
        self._held_lists = 0
        from tests.servers.vertex_batch import BatchPredictions

        self.batch = BatchPredictions(self, seed=seed)  # batchPredictionJobs; knobs on server.batch
        from tests.servers.vertex_faults import VertexFaults

        self.faults = VertexFaults()  # preflight fault switches (disabled API, denied permissions, ...)

    @property
    def parent(self) -> str:
        return f"projects/{self.project}/locations/{self.location}"

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

    def add_prompt_fault(self, contains: str, code: int, times: int | None = None,
                         retry_after: str | None = None) -> None:
        """generateContent requests whose prompt contains `contains` are answered HTTP `code`:
        the next `times` of them (None: all, until `clear_prompt_faults`), with a `Retry-After`
        header when `retry_after` is given (delay-seconds or an HTTP-date, sent as is)."""
        with self._lock:
            self._prompt_faults.append({"contains": contains, "code": code, "left": times,
                                        "retry_after": retry_after})

    def clear_prompt_faults(self) -> None:
        with self._lock:
            self._prompt_faults.clear()

    def _prompt_fault(self, prompt: str) -> None:
        with self._lock:
            for fault in self._prompt_faults:
                if fault["contains"] in prompt and fault["left"] != 0:
                    if fault["left"] is not None:
                        fault["left"] -= 1
                    headers = {"Retry-After": fault["retry_after"]} if fault["retry_after"] else None
                    raise _HttpError(fault["code"], f"Injected fault {fault['code']} for this prompt (test server)",
                                     headers=headers)

    def count(self, method: str, path_contains: str) -> int:
        """Requests with this method whose path (or path?query) contains `path_contains`."""
        with self._lock:
            return sum(
                1
                for r in self.requests
                if r["method"] == method.upper()
                and (path_contains in r["path"] or path_contains in f"{r['path']}?{r['query']}")
            )

    def hold_lists(self, n: int, timeout: float = 120.0) -> None:
        """The next `n` list requests wait for each other (up to `timeout`) before answering, so `n`
        concurrent clients all see the same job list: a deterministic race for tests."""
        with self._lock:
            self._list_barrier, self._held_lists = threading.Barrier(n, timeout=timeout), n

    @property
    def job_names(self) -> list[str]:
        with self._lock:
            return list(self._jobs)

    def job_outputs(self, job_name: str) -> tuple[str, str]:
        """(model, endpoint) the job will create if it succeeds; they 404 until it has."""
        with self._lock:
            job = self._jobs[job_name]
            return f"{job.model}@1", job.endpoint

    def set_job_state(self, job_name: str, state: str | None) -> None:
        """Force a job into `state` (any JOB_STATE_* suffix) from now on; None: back to its clock."""
        allowed = TIMELINE_STATES + OUTCOMES + ("CANCELLING",)
        if state is not None and state not in allowed:
            raise ValueError(f"state: expected one of {', '.join(allowed)}, got {state!r}")
        with self._lock:
            self._jobs[job_name].forced = None if state is None else (state, time.time())

    def deploy_tuned_model(
        self,
        display_name: str = "tuned",
        *,
        endpoint: str | None = None,
        traffic_split: dict[str, int] | None = None,
        base_model: str = "gemini-2.5-flash",
    ) -> dict[str, str]:
        """Register a tuned model deployed to an endpoint, as a finished tuning job leaves them.

        endpoint=None creates a new endpoint where the model takes 100% of the traffic; an existing
        endpoint gets the model as one more deployed model, with `traffic_split` (deployed model id
        → percent, "0" standing for the model being deployed, as in Vertex's deployModel) or, if
        None, no traffic. Returns {"model": name@1, "endpoint": name, "deployed_model_id": id}.
        """
        with self._lock:
            now = time.time()
            mid, did = next(self._ids), str(next(self._ids))
            model = _Model(f"{self.parent}/models/{mid}", display_name, base_model, registered=now)
            self._models[model.name] = model
            if endpoint is None:
                ep = _Endpoint(f"{self.parent}/endpoints/{next(self._ids)}", display_name, registered=now)
                self._endpoints[ep.name] = ep
                ep.deployed[did], ep.traffic = model.name, {did: 100}
            else:
                ep = self._endpoints[endpoint]
                ep.deployed[did] = model.name
                if traffic_split is not None:
                    split = {(did if k == "0" else k): int(v) for k, v in traffic_split.items()}
                    try:
                        _check_split(split, ep)
                    except _HttpError as exc:
                        del ep.deployed[did], self._models[model.name]
                        raise ValueError(f"traffic_split: {exc.message}") from None
                    ep.traffic = {k: v for k, v in split.items() if v}
            return {"model": f"{model.name}@1", "endpoint": ep.name, "deployed_model_id": did}

    def max_active_jobs(self) -> int:
        """The most tuning jobs that were ever active (created, not yet ended) at the same time."""
        now = time.time()
        with self._lock:
            edges = []
            for job in self._jobs.values():
                end = job.end_time() if job.state(now) in ENDED else now
                edges += [(job.created, 1), (end, -1)]
        active = top = 0
        for _, step in sorted(edges, key=lambda e: (e[0], e[1])):  # an end before a start at the same instant
            active += step
            top = max(top, active)
        return top

    def served_by(self) -> list[str]:
        """The deployed model id that answered each endpoint generateContent, in order."""
        with self._lock:
            return [r["deployed_model_id"] for r in self.requests if r.get("deployed_model_id")]

    # ------------------------------------------------------------------ dispatch
    def _handle(self, method: str, path: str, query: dict[str, list[str]], body: Any, entry: dict) -> tuple[int, dict]:
        if (faulted := self.faults.intercept(self, method, path, body)) is not None:
            return faulted
        if self.latency_s:
            time.sleep(self.latency_s)
        with self._lock:
            rng = self._count_rng if path.endswith(":countTokens") else self._rng
            if self._fault_rate and rng.random() < self._fault_rate:
                code = rng.choice(self._fault_codes)
                raise _HttpError(code, f"Injected fault {code} (test server)")
            self._settle_operations(time.time())
        found = discovery.match(method, path, [method_id for method_id, _ in self.routes()])
        if found is None:
            version = path.lstrip("/").split("/", 1)[0]
            known = discovery.match(method, path, list(discovery.methods(version))) if discovery.document(version) \
                else None
            raise _HttpError(404, f"No route for {method} {path}: the test server does not serve {known[1]}." if known
                             else f"The requested URL {path} was not found on this server (no method of Google's "
                                  f"API description for {method} there).")
        version, method_id, values = found
        project, location = values.pop("projectsId"), values.pop("locationsId")
        if project != self.project:
            verb = method_id.rsplit(".", 1)[-1]
            raise _HttpError(403, f"Permission 'aiplatform.{method_id.split('.')[-2]}.{verb}' denied on resource "
                                  f"'//aiplatform.googleapis.com/projects/{project}/locations/{location}' (or it may "
                                  "not exist).")
        if location != self.location:
            raise _HttpError(404, f"Location {location} is not served (this server: {self.location}).")
        problems, body = discovery.request(version, method_id, query, body)
        if problems:
            raise _invalid(problems)
        entry.update(method_id=method_id, version=version)
        fn = dict(self.routes())[method_id]
        # a handler declares `entry` when it annotates the request log (older ones do not)
        extra = {"entry": entry} if "entry" in inspect.signature(fn).parameters else {}
        payload = fn(f"projects/{project}/locations/{location}", *values.values(), query=query, body=body, **extra)
        for problem in discovery.response(version, method_id, payload):
            self.fail(f"{method} {path}: the answer does not fit Google's API description: {problem}")
        return 200, payload

    def routes(self) -> list[tuple[str, Callable]]:
        """(discovery method id, handler) of every route this server speaks; a handler is called with the parent
        and the path's other values in the order of the method's `flatPath`. Add one with `extra_routes`."""
        p = "aiplatform.projects.locations."
        return [
            (p + "publishers.models.generateContent", self._generate_base),
            (p + "endpoints.generateContent", self._generate_endpoint),
            *([(p + "publishers.models.countTokens", self._count_tokens)] if self.count_tokens_route else []),
            (p + "tuningJobs.create", self._create_job),
            (p + "tuningJobs.list", self._list_jobs),
            (p + "tuningJobs.get", self._get_job),
            (p + "tuningJobs.cancel", self._cancel_job),
            (p + "endpoints.operations.get", self._get_operation),
            (p + "models.operations.get", self._get_operation),
            (p + "operations.get", self._get_operation),
            (p + "endpoints.get", self._get_endpoint),
            (p + "endpoints.undeployModel", self._undeploy),
            (p + "endpoints.delete", self._delete_endpoint),
            (p + "models.get", _versioned(self._get_model)),
            (p + "models.delete", _versioned(self._delete_model)),
            (p + "models.deleteVersion", _versioned(self._delete_model)),
            (p + "models.mergeVersionAliases", _versioned(self._merge_aliases)),
            (p + "models.patch", _versioned(self._update_model)),
            *self.batch.routes(),
            *self.extra_routes,
        ]

    def fail(self, message: str) -> None:
        """A server-side problem that must fail the test that caused it (checked at the fixture's teardown)."""
        with self._lock:
            self.failures.append(message)

    # ------------------------------------------------------------------ generateContent
    def _check_generate(self, body: Any, base_model: str) -> tuple[str, dict]:
        """Refuse what Vertex refuses for `base_model` beyond the API description; return (prompt, generationConfig).
        The body's names and types were checked against the document already (camelCase from there on)."""
        texts = self._check_contents(body)
        config = get(body, "generation_config") or {}
        lim = schema.limits(base_model)
        for name, value, low, high, ok in (
            ("temperature", get(config, "temperature"), "0 (inclusive)", "2.0001 (exclusive)",
             lambda v: 0 <= v <= 2),
            ("topP", get(config, "top_p"), "0 (exclusive)", "1.0001 (exclusive)", lambda v: 0 < v <= 1),
            ("maxOutputTokens", get(config, "max_output_tokens"), "1 (inclusive)",
             f"{lim.max_output_tokens + 1} (exclusive)", lambda v: 1 <= v <= lim.max_output_tokens),
            ("candidateCount", get(config, "candidate_count"), "1 (inclusive)", "9 (exclusive)",
             lambda v: 1 <= v <= 8),
            ("topK", get(config, "top_k"), "1 (inclusive)", "65 (exclusive)", lambda v: 1 <= v <= 64),
        ):
            if value is not None and not ok(float(value)):
                raise _invalid([(f"generation_config.{schema.snake(name)}",
                                 schema.out_of_range(name, float(value), low, high))])
        thinking = get(config, "thinking_config")
        if thinking is not None:
            if lim.thinking is None:
                raise _invalid([("generation_config.thinking_config",
                                 f"Thinking is not supported by {base_model}; remove thinking_config.")])
            budget = get(thinking, "thinking_budget")
            low, high = lim.thinking
            if budget is not None and int(budget) != -1 and not (
                    (int(budget) == 0 and lim.thinking_off) or low <= int(budget) <= high):
                raise _invalid([("generation_config.thinking_config.thinking_budget", schema.out_of_range(
                    "thinkingBudget", float(budget), f"{low} (inclusive)", f"{high + 1} (exclusive)"))])
        return "\n".join(texts), config

    @staticmethod
    def _check_contents(body: dict) -> list[str]:
        """Refuse empty contents, bad roles and empty parts as Vertex does; return the prompt's texts."""
        contents = _as_list(get(body, "contents"))
        if not contents:
            raise _invalid([("contents", "Unable to submit request because it must include at least one contents "
                                         "field, which describes the prompt input. Update the value and try again.")])
        texts = []
        for i, content in enumerate(contents):
            role = get(content, "role")
            if role not in (None, "", "user", "model"):
                raise _invalid([(f"contents[{i}].role", "Please use a valid role: user, model.")])
            parts = _as_list(get(content, "parts"))
            if not parts:
                raise _invalid([(f"contents[{i}].parts", "Unable to submit request because it must include at least "
                                                         "one parts field, which describes the prompt input. Update "
                                                         "the value and try again.")])
            texts += [p["text"] for p in parts if isinstance(p, dict) and "text" in p and not get(p, "thought")]
        return texts

    def _answer(self, prompt: str, text: str, config: dict, model: str, base_model: str) -> dict:
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
        if "[[SAFETY]]" in prompt:  # the answer, not the prompt, was blocked: a candidate with no content
            return {
                "candidates": [{
                    "finishReason": "SAFETY",
                    "index": 0,
                    "safetyRatings": [
                        {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH",
                         "probabilityScore": 0.97, "severity": "HARM_SEVERITY_HIGH", "severityScore": 0.91,
                         "blocked": True},
                        {"category": "HARM_CATEGORY_HARASSMENT", "probability": "NEGLIGIBLE",
                         "probabilityScore": 0.02, "severity": "HARM_SEVERITY_NEGLIGIBLE", "severityScore": 0.01},
                    ],
                }],
                "usageMetadata": {"promptTokenCount": usage_in, "totalTokenCount": usage_in},
                "modelVersion": model,
            }
        if "[[EMPTY]]" in prompt:
            return {
                "candidates": [{"content": {"role": "model"}, "finishReason": "STOP"}],
                "usageMetadata": {"promptTokenCount": usage_in, "totalTokenCount": usage_in},
                "modelVersion": model,
            }
        thinking = get(config, "thinking_config") or {}
        budget = get(thinking, "thinking_budget")
        thinks = base_model in THINKING_BY_DEFAULT and (budget is None or int(budget) != 0)
        words = text.split()
        finish = "STOP"
        limit = int(get(config, "max_output_tokens") or 0)
        if limit and len(words) > limit:
            words, finish = words[:limit], "MAX_TOKENS"
        out = " ".join(words)
        usage_out = max(1, len(out) // 4)
        parts = [{"text": out}]
        usage: dict[str, Any] = {"promptTokenCount": usage_in, "candidatesTokenCount": usage_out}
        if thinks:
            thought = f"**Summarizing** I read the article and keep its first point: {out[:60]}"
            usage["thoughtsTokenCount"] = max(1, len(thought) // 4)
            if get(thinking, "include_thoughts") or self.thoughts_unasked:
                parts.insert(0, {"text": thought, "thought": True})
        usage["totalTokenCount"] = usage_in + usage_out + usage.get("thoughtsTokenCount", 0)
        return {
            "candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": finish, "index": 0}],
            "usageMetadata": usage,
            "modelVersion": model,
        }

    def _generate_base(self, parent, publisher, model, *, query, body):
        if publisher != "google" or model not in self.base_models:
            raise _HttpError(
                404,
                f"Publisher Model `{parent}/publishers/{publisher}/models/{model}` was not found or your project does "
                "not have access to it. Please ensure you are using a valid model version. For more information, "
                "see: https://cloud.google.com/vertex-ai/generative-ai/docs/learn/model-versions",
            )
        prompt, config = self._check_generate(body, model)
        self._prompt_fault(prompt)
        return self._answer(prompt, base_answer_text(prompt), config, model, model)

    def _generate_endpoint(self, parent, eid, *, query, body, entry):
        with self._lock:
            ep = self._endpoint(parent, eid)
            weights = [(did, pct) for did, pct in sorted(ep.traffic.items()) if pct > 0 and did in ep.deployed]
            if not ep.deployed or not weights:
                raise _precondition(f"Endpoint `{ep.name}` has no deployed model that takes traffic.")
            did = self._traffic_rng.choices([d for d, _ in weights], weights=[w for _, w in weights])[0]
            model = self._models[ep.deployed[did]]
        prompt, config = self._check_generate(body, model.base_model)
        entry["deployed_model_id"] = did
        self._prompt_fault(prompt)
        return self._answer(prompt, self.tuned_text(prompt, ep.job or model.job, ep.epoch), config, ep.name,
                            model.base_model)

    def tuned_text(self, prompt: str, job: Any, epoch: int | None = None) -> str:
        """What a tuned model answers (online and batch alike): the article's first sentence, or what
        `tuned_answer` makes of the job's hyperparameters and the epoch (the last one unless given)."""
        text = tuned_answer_text(prompt)
        if self.tuned_answer is not None and job is not None:
            hyper = get(get(job.body, "supervised_tuning_spec") or {}, "hyper_parameters") or {}
            epochs = int(get(hyper, "epoch_count") or 1)
            answer = self.tuned_answer(
                {"epochs": epochs, "adapter_size": get(hyper, "adapter_size"),
                 "learning_rate_multiplier": float(get(hyper, "learning_rate_multiplier") or 1.0)},
                epoch or epochs, _article(prompt))
            text = text if answer is None else answer
        return text

    # ------------------------------------------------------------------ countTokens
    def _count_tokens(self, parent, publisher, model, *, query, body):
        """`{"totalTokens": N}` with N = `count_text_tokens` over every text (system instruction too)."""
        texts = self._check_contents(body)
        system = get(body, "system_instruction") or {}
        texts += [p["text"] for p in _as_list(get(system, "parts")) if isinstance(p, dict) and "text" in p]
        if publisher != "google" or model not in self.base_models:
            raise _HttpError(404, f"Publisher Model `{parent}/publishers/{publisher}/models/{model}` was not found or "
                                  "your project does not have access to it.")
        total = sum(count_text_tokens(t) for t in texts)
        return {"totalTokens": total, "totalBillableCharacters": sum(len(t) for t in texts)}

    # ------------------------------------------------------------------ tuning jobs
    def _read_dataset(self, field_name: str, uri: Any, base_model: str) -> vertex_datasets.DataCheck:
        """The dataset read from the GCS emulator and checked row by row (tests/servers/vertex_datasets.py)."""
        if not (isinstance(uri, str) and uri.startswith("gs://") and uri.endswith(".jsonl")):
            raise _invalid([(f"supervised_tuning_spec.{schema.snake(field_name)}",
                             f"{schema.snake(field_name)} should be a GCS object of type JSONL, got {uri!r}")])
        if self.gcs_url is None:
            raise RuntimeError("test server: no gcs_url to read tuning datasets from (pass gcs_url=)")
        data = vertex_datasets.read(self.gcs_url, uri)
        if data is None:
            raise _invalid([(f"supervised_tuning_spec.{schema.snake(field_name)}",
                             f"{schema.snake(field_name)} {uri} does not exist or is not readable by the service "
                             "account.")])
        limit = self.max_example_tokens or schema.limits(base_model).max_example_tokens
        return vertex_datasets.check(data, uri, limit, count_text_tokens,
                                     validation=field_name == "validationDatasetUri")

    def _check_tuning_request(self, body: dict) -> tuple[str, dict, dict]:
        """What Vertex refuses in a TuningJob beyond its API description; returns (base model, spec, hyper)."""
        base = get(body, "base_model")
        if not base:
            raise _invalid([("base_model", "base_model: required")])
        short = base.removeprefix("publishers/google/models/")
        if short not in self.tunable_models:
            raise _invalid([("base_model", f"Base model {base} is not supported for supervised tuning. Supported: "
                                           f"{', '.join(self.tunable_models)}.")])
        lim = schema.limits(short)
        spec = get(body, "supervised_tuning_spec") or {}
        if not get(spec, "training_dataset_uri"):
            raise _invalid([("supervised_tuning_spec.training_dataset_uri", "training_dataset_uri: required")])
        hyper = get(spec, "hyper_parameters") or {}
        where = "supervised_tuning_spec.hyper_parameters"
        for name in ("learningRate", "batchSize"):
            if name in hyper:
                raise _invalid([(f"{where}.{schema.snake(name)}",
                                 f"{schema.snake(name)} is not supported for {short}; Gemini supervised tuning takes "
                                 "epoch_count, learning_rate_multiplier and adapter_size.")])
        epochs, lrm = get(hyper, "epoch_count"), get(hyper, "learning_rate_multiplier")
        low, high = schema.EPOCHS
        if epochs is not None and not low <= int(epochs) <= high:
            raise _invalid([(f"{where}.epoch_count", schema.out_of_range(
                "epochCount", float(epochs), f"{low} (inclusive)", f"{high + 1} (exclusive)"))])
        if lrm is not None and not float(lrm) > 0:
            raise _invalid([(f"{where}.learning_rate_multiplier",
                             f"learning_rate_multiplier must be greater than 0, got {lrm}.")])
        size = schema.ADAPTER_SIZES.get(get(hyper, "adapter_size") or "")
        if size is not None and size not in lim.adapter_sizes:
            raise _invalid([(f"{where}.adapter_size", f"Adapter size {size} is not supported for {short}; use "
                                                      f"{', '.join(map(str, lim.adapter_sizes))}.")])
        display = get(body, "tuned_model_display_name")
        if display is not None and len(display) > schema.DISPLAY_NAME_MAX:
            raise _invalid([("tuned_model_display_name", f"tuned_model_display_name is {len(display)} characters "
                                                         f"long; the limit is {schema.DISPLAY_NAME_MAX}.")])
        problems = schema.label_problems(get(body, "labels") or {})
        if problems:
            raise _invalid(problems)
        return short, spec, hyper

    def _create_job(self, parent, *, query, body):
        short, spec, hyper = self._check_tuning_request(body)
        train = self._read_dataset("trainingDatasetUri", get(spec, "training_dataset_uri"), short)
        val = (self._read_dataset("validationDatasetUri", get(spec, "validation_dataset_uri"), short)
               if get(spec, "validation_dataset_uri") else None)
        labels = get(body, "labels") or {}
        with self._lock:
            num, mid, eid = next(self._ids), next(self._ids), next(self._ids)
            timeline = self.job_timeline or (("PENDING", self.job_phases[0]), ("RUNNING", self.job_phases[1]))
            error = train.error or (val.error if val else None)
            job = _Job(
                number=num,
                name=f"{parent}/tuningJobs/{num}",
                created=time.time(),
                timeline=tuple(timeline[:1]) if error else tuple(timeline),  # Vertex checks the data first
                outcome="FAILED" if error else self.job_outcome,
                body=body,
                labels=dict(labels),
                model=f"{parent}/models/{mid}",
                endpoint=f"{parent}/endpoints/{eid}",
                examples=train.examples,
                base_model=short,
                tokens=train.tokens,
                characters=train.characters,
                truncated=train.truncated,
                data_error=error,
                cancel_delay_s=self.cancel_delay_s,
            )
            self._jobs[job.name] = job
            display = get(body, "tuned_model_display_name") or "tuned"
            self._models[job.model] = _Model(job.model, display, short, job)
            did = f"{mid}1"
            self._endpoints[job.endpoint] = _Endpoint(job.endpoint, display, job, deployed={did: job.model},
                                                      traffic={did: 100})
            epochs = int(get(hyper, "epoch_count") or 1)
            if epochs > 1 and not get(spec, "export_last_checkpoint_only"):
                for epoch in range(1, epochs):  # the last epoch's checkpoint is the job's own endpoint
                    ckpt = f"{parent}/endpoints/{next(self._ids)}"
                    self._endpoints[ckpt] = _Endpoint(ckpt, f"{display}-checkpoint-{epoch}", job, epoch=epoch,
                                                      deployed={f"{mid}{epoch + 1}": job.model},
                                                      traffic={f"{mid}{epoch + 1}": 100})
                    job.checkpoints.append((epoch, ckpt))
                job.checkpoints.append((epochs, job.endpoint))
            return self._job_json(job, time.time())

    def _job_json(self, job: _Job, now: float) -> dict:
        state = job.state(now)
        spec = get(job.body, "supervised_tuning_spec") or {}
        out: dict[str, Any] = {
            "name": job.name,
            "baseModel": get(job.body, "base_model"),
            "tunedModelDisplayName": get(job.body, "tuned_model_display_name"),
            "supervisedTuningSpec": spec,
            "state": f"JOB_STATE_{state}",
            "createTime": _now_rfc3339(job.created),
            "updateTime": _now_rfc3339(min(now, job.end_time()) if state in ENDED else now),
        }
        out = {k: v for k, v in out.items() if v is not None}  # a response omits unset fields
        if job.labels:
            out["labels"] = job.labels
        if self.state_override:
            out["state"] = self.state_override
        started = job.started(now)
        if started is not None:
            out["startTime"] = _now_rfc3339(started)
        if started is not None and job.data_error is None:
            epochs = int(get(get(spec, "hyper_parameters") or {}, "epoch_count") or 1)
            out["experiment"] = f"{job.name.split('/tuningJobs/')[0]}/metadataStores/default/contexts/tuning-experiment-{job.number}"
            stats: dict[str, Any] = {
                "tuningDatasetExampleCount": str(job.examples),
                "totalTuningCharacterCount": str(job.characters),
                "totalBillableCharacterCount": str(job.characters * epochs),
                "totalBillableTokenCount": str(job.tokens * epochs),
                "tuningStepCount": str(math.ceil(job.examples * epochs / 16)),
                "totalTruncatedExampleCount": str(len(job.truncated)),
            }
            if job.truncated:
                stats["truncatedExampleIndices"] = [str(i) for i in job.truncated]
                stats["droppedExampleReasons"] = [
                    f"example {i} exceeds the {self.max_example_tokens or schema.limits(job.base_model).max_example_tokens}"
                    " tokens a training example may hold; truncated" for i in job.truncated]
            out["tuningDataStats"] = {"supervisedTuningDataStats": stats}
        if state in ENDED:
            out["endTime"] = _now_rfc3339(job.end_time())
        if state == "SUCCEEDED":
            out["tunedModel"] = {"model": f"{job.model}@1", "endpoint": self._default_endpoint(job)}
            if job.checkpoints:
                out["tunedModel"]["checkpoints"] = [dict(c, endpoint=ep) for c, (_, ep) in
                                                    zip(self._checkpoints(job), job.checkpoints)]
        elif state == "FAILED":
            out["error"] = {"code": 3, "message": job.data_error or "Dataset row 3: invalid role"}
        elif state == "CANCELLED":
            out["error"] = {"code": 1, "message": "CANCELED"}
        elif state == "EXPIRED":
            out["error"] = {"code": 4, "message": "The tuning job expired before it could start."}
        elif state == "PARTIALLY_SUCCEEDED":
            out["error"] = {"code": 13, "message": "Tuning finished without a deployable model."}
        return out

    @staticmethod
    def _checkpoints(job: _Job) -> list[dict]:
        per_epoch = math.ceil(job.examples / 16)
        return [{"checkpointId": str(epoch), "epoch": str(epoch), "step": str(per_epoch * epoch)}
                for epoch, _ in job.checkpoints]

    def _default_endpoint(self, job: _Job) -> str:
        chosen = self._models[job.model].default_checkpoint
        return next((ep for epoch, ep in job.checkpoints if str(epoch) == chosen), job.endpoint)

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
        if self.cancel_fault:
            raise _HttpError(self.cancel_fault, f"Injected cancel fault {self.cancel_fault} (test server)")
        with self._lock:
            job = self._job(parent, num)
            now = time.time()
            state = job.state(now)
            if state in ENDED:
                raise _precondition(f"Cannot cancel TuningJob `{job.name}` in state JOB_STATE_{state}.")
            if job.cancelled_at is None:
                job.cancelled_at = now
            return {}

    def _list_jobs(self, parent, *, query, body):
        with self._lock:
            # only sftflow's intent lookups (filtered by label) wait, not a preflight's bare pageSize=1 list
            barrier = self._list_barrier if self._held_lists > 0 and query.get("filter") else None
            self._held_lists -= 1 if barrier else 0
        if barrier is not None:
            barrier.wait()
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

    # ------------------------------------------------------------------ long-running operations
    def _start_operation(self, resource: str, response_type: str, apply: Callable[[], None]) -> dict:
        """An operation that finishes (and takes effect) `operation_delay_s` from now. Call under the lock."""
        op = _Operation(f"{resource}/operations/{next(self._ids)}", time.time() + self.operation_delay_s,
                        response_type, apply)
        self._operations[op.name] = op
        self._settle_operations(time.time())
        return self._operation_json(op)

    def _settle_operations(self, now: float) -> None:
        for op in self._operations.values():
            if not op.done and now >= op.done_at:
                op.apply()
                op.done = True

    @staticmethod
    def _operation_json(op: _Operation) -> dict:
        if not op.done:
            return {"name": op.name}
        return {"name": op.name, "done": True,
                "response": {"@type": f"type.googleapis.com/{op.response_type}"}}

    def _get_operation(self, parent, *ids, query, body, entry):
        name = entry["path"].lstrip("/").split("/", 1)[1]  # the operation's resource name (after the version)
        with self._lock:
            op = self._operations.get(name)
            if op is None:
                raise _HttpError(404, f"Operation `{name}` not found.")
            return self._operation_json(op)

    # ------------------------------------------------------------------ endpoints & models
    @staticmethod
    def _visible(job: _Job | None) -> bool:
        return job is None or job.state(time.time()) == "SUCCEEDED"

    def _endpoint(self, parent: str, eid: str) -> _Endpoint:
        name = f"{parent}/endpoints/{eid}"
        ep = self._endpoints.get(name)
        if ep is None or ep.deleted or not self._visible(ep.job):
            raise _HttpError(404, f"Endpoint `{name}` not found.")
        return ep

    def _endpoint_json(self, ep: _Endpoint) -> dict:
        created = ep.job.end_time() if ep.job else ep.registered
        return {
            "name": ep.name,
            "displayName": ep.display_name,
            "deployedModels": [
                {"id": did, "model": model, "displayName": self._models[model].display_name,
                 "createTime": _now_rfc3339(created)}
                for did, model in ep.deployed.items()
            ],
            "trafficSplit": dict(ep.traffic),
            "createTime": _now_rfc3339(created),
        }

    def _get_endpoint(self, parent, eid, *, query, body):
        with self._lock:
            return self._endpoint_json(self._endpoint(parent, eid))

    def _undeploy(self, parent, eid, *, query, body):
        """undeployModel, as https://cloud.google.com/vertex-ai/docs/reference/rest/v1/projects.locations.endpoints/undeployModel
        says: a model that still takes traffic is undeployed only if trafficSplit moves it elsewhere
        (or it is the last one); the split must name deployed models and add up to 100."""
        with self._lock:
            ep = self._endpoint(parent, eid)
            did = get(body, "deployed_model_id")
            if did not in ep.deployed:
                raise _precondition(f"Deployed model {did!r} not found on `{ep.name}`.")
            rest = [d for d in ep.deployed if d != did]
            given = {k: int(v) for k, v in (get(body, "traffic_split") or {}).items()}
            if not rest:
                new_split: dict[str, int] = {}
            elif given:
                _check_split(given, ep)
                if given.get(did, 0):
                    raise _precondition(f"Deployed model {did} would keep {given[did]}% of the traffic of "
                                        f"`{ep.name}`; give it 0 in trafficSplit to undeploy it.")
                new_split = {k: v for k, v in given.items() if v and k != did}
            elif ep.traffic.get(did, 0):
                raise _precondition(f"Deployed model {did} takes {ep.traffic[did]}% of the traffic of `{ep.name}`; "
                                    "update trafficSplit to move it to the other deployed models first.")
            else:
                new_split = dict(ep.traffic)

            def apply() -> None:
                ep.deployed.pop(did, None)
                ep.traffic = new_split

            return self._start_operation(ep.name, "google.cloud.aiplatform.v1.UndeployModelResponse", apply)

    def _delete_endpoint(self, parent, eid, *, query, body):
        with self._lock:
            ep = self._endpoint(parent, eid)
            if ep.deployed:
                raise _precondition(f"Endpoint `{ep.name}` has deployed models; undeploy them first.")

            def apply() -> None:
                ep.deleted = True

            return self._start_operation(ep.name, "google.protobuf.Empty", apply)

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
            out = {
                "name": model.name,
                "versionId": "1",
                "versionAliases": ["default", *model.aliases],
                "displayName": model.display_name,
                "deployedModels": deployed,
                "createTime": _now_rfc3339(model.job.end_time() if model.job else model.registered),
            }
            if model.job is not None and model.job.checkpoints:
                out["checkpoints"] = self._checkpoints(model.job)
                out["defaultCheckpointId"] = model.default_checkpoint or out["checkpoints"][-1]["checkpointId"]
            return out

    def _update_model(self, parent, mid, version=None, *, query, body):
        """models.patch (google-genai `models.update`): display name, description, or the default checkpoint,
        which must be one of the model's checkpoints (a model tuned without intermediate checkpoints has none)."""
        masks = query.get("updateMask") or []
        mask = {schema.snake(f.strip()) for m in masks for f in m.split(",") if f.strip()}
        if not mask:  # "Required. The update mask applies to the resource." (models.patch in the document)
            raise _invalid([("update_mask", "update_mask: required. Name the fields to update, e.g. "
                                            "updateMask=defaultCheckpointId.")])
        given = {schema.snake(k) for k in (body or {})}
        if mask - given - {"labels", "description", "display_name"}:
            raise _invalid([("update_mask", f"Field {sorted(mask - given)[0]!r} is in the update mask but not set.")])
        display = get(body, "display_name")
        if display is not None and len(display) > schema.DISPLAY_NAME_MAX:
            raise _invalid([("model.display_name", f"display_name is {len(display)} characters long; the limit is "
                                                   f"{schema.DISPLAY_NAME_MAX}.")])
        if problems := schema.label_problems(get(body, "labels") or {}, "model.labels"):
            raise _invalid(problems)
        with self._lock:
            model = self._model(parent, mid, version)
            wanted = get(body, "default_checkpoint_id") if "default_checkpoint_id" in mask else None  # unmasked: ignored
            if wanted is not None:
                known = [c["checkpointId"] for c in self._checkpoints(model.job)] if model.job else []
                if str(wanted) not in known:
                    raise _invalid([("model.default_checkpoint_id",
                                     f"Checkpoint {wanted!r} does not exist in model `{model.name}` "
                                     f"(checkpoints: {', '.join(known) or 'none'}).")])
                model.default_checkpoint = str(wanted)
            if "display_name" in mask:
                model.display_name = get(body, "display_name") or model.display_name
        return self._get_model(parent, mid, version, query=query, body=None)

    def _delete_model(self, parent, mid, version=None, *, query, body):
        with self._lock:
            model = self._model(parent, mid, version)
            for ep in self._endpoints.values():
                if not ep.deleted and model.name in ep.deployed.values():
                    raise _precondition(f"Model `{model.name}` is deployed to `{ep.name}`; undeploy it first.")

            def apply() -> None:
                model.deleted = True

            return self._start_operation(model.name, "google.protobuf.Empty", apply)


    def _merge_aliases(self, parent, mid, version=None, *, query, body):
        """mergeVersionAliases: the name must carry a version; aliases follow Vertex's pattern, "default"
        cannot be added or removed by hand, a "-alias" removes one; an alias lives on one version only."""
        if version is None:
            raise _invalid([("name", f"Model name `{parent}/models/{mid}` must include a version ID (e.g. @1).")])
        aliases = get(body, "version_aliases") or []
        if not aliases:
            raise _invalid([("version_aliases", "version_aliases must not be empty.")])
        for alias in aliases:
            bare = alias[1:] if alias.startswith("-") else alias
            if not _ALIAS.match(bare):
                raise _invalid([("version_aliases", f"Alias {alias!r} does not match [a-z][a-zA-Z0-9-]{{0,126}}"
                                                    "[a-z0-9-].")])
            if bare == "default":
                raise _invalid([("version_aliases", "The alias 'default' is reserved.")])
        with self._lock:
            model = self._model(parent, mid, version)
            for alias in aliases:
                if alias.startswith("-"):
                    if alias[1:] in model.aliases:
                        model.aliases.remove(alias[1:])
                elif alias not in model.aliases:
                    model.aliases.append(alias)
        return self._get_model(parent, mid, version, query=query, body=None)


def _versioned(handler: Callable) -> Callable:
    """A models.* handler taking (parent, model id, version) from a `modelsId` path value such as `123@1`."""

    def call(parent, model_id, *, query, body, **extra):
        mid, _, version = model_id.partition("@")
        return handler(parent, mid, version or None, query=query, body=body, **extra)

    return call


def _done_op(resource: str, num: int, response_type: str) -> dict:
    """A long-running operation already finished (for calls Vertex answers at once)."""
    return {"name": f"{resource}/operations/{num}", "done": True,
            "response": {"@type": f"type.googleapis.com/{response_type}"}}


def _check_split(split: dict[str, int], ep: _Endpoint) -> None:
    unknown = sorted(set(split) - set(ep.deployed))
    if unknown:
        raise _invalid([("traffic_split", f"trafficSplit names {', '.join(unknown)}, which are not deployed to "
                                          f"`{ep.name}`.")])
    if any(v < 0 for v in split.values()) or sum(split.values()) != 100:
        raise _invalid([("traffic_split", f"trafficSplit must add up to 100, got {sum(split.values())}.")])


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
        extra_headers: dict[str, str] = {}
        try:
            if raw:
                try:
                    body = json.loads(raw)
                except ValueError:
                    raise _HttpError(400, "Invalid JSON payload received. Unexpected token.") from None
            entry["body"] = body
            auth = self.headers.get("Authorization") or ""
            token = auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") else ""
            if not token or (server.require_token is not None and token != server.require_token):
                raise _HttpError(401, "Request had invalid authentication credentials. Expected OAuth 2 access "
                                      "token, login cookie or other valid authentication credential. See "
                                      "https://developers.google.com/identity/sign-in/web/devconsole-project.",
                                 "UNAUTHENTICATED")
            code, payload = server._handle(method, entry["path"], parse_qs(parts.query), body, entry)
        except _HttpError as exc:
            code = exc.code
            extra_headers = exc.headers
            payload = {"error": {"code": exc.code, "message": exc.message, "status": exc.status}}
            if exc.details:
                payload["error"]["details"] = exc.details
        except Exception as exc:  # a server bug: answered 500 (no hung client) and failing the test at teardown
            import traceback

            server.fail(f"{method} {entry['path']}: test server error: {''.join(traceback.format_exception(exc))}")
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
            for name, value in extra_headers.items():
                self.send_header(name, value)
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
    p.add_argument("--job-outcome", default="SUCCEEDED", choices=list(OUTCOMES))
    p.add_argument("--cancel-delay", type=float, default=0.3, help="seconds a cancelled job stays CANCELLING")
    p.add_argument("--operation-delay", type=float, default=0.2, help="seconds before an undeploy/delete is done")
    p.add_argument("--gcs-url", default=None, help="GCS emulator base URL, where tuning datasets must exist")
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
        cancel_delay_s=a.cancel_delay,
        operation_delay_s=a.operation_delay,
        gcs_url=a.gcs_url,
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
