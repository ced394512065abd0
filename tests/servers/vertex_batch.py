"""Batch prediction for the Vertex-shaped test server (`batchPredictionJobs`), as strict as Vertex.

What Vertex does, and so this does (https://cloud.google.com/vertex-ai/generative-ai/docs/multimodal/batch-prediction-from-cloud-storage,
REST fields in https://cloud.google.com/vertex-ai/docs/reference/rest/v1/projects.locations.batchPredictionJobs):

- create: `displayName` and `model` are required; the model must exist (a publisher model the
  server serves, or a tuned `projects/P/locations/L/models/ID[@1]`) → else 404; the input must be
  `instancesFormat: jsonl` with `gs://` URIs that exist in the GCS emulator, the output
  `predictionsFormat: jsonl` under a `gs://` prefix whose bucket exists → else 400; unknown JSON
  fields → 400.
- the job moves through `timeline` (default 0.5 s PENDING, 1 s RUNNING), then `outcome`; a job
  created with `pending_s` set stays PENDING that long. `completionStats` grow while it runs.
- at the end it writes `<prefix>/prediction-model-<ts>/predictions.jsonl`: one line per input row,
  in shuffled order, `{"status": "", "processed_time", "request": <echoed>, "response": {...}}`;
  a failed row has a non-empty `status` and no `response`. A row whose request is malformed fails
  with Vertex's 400 message; `fail_rate` (seeded) fails rows on their first `fail_times` runs and
  rows containing `fail_marker` always fail. A malformed input line fails the whole job.
- answers come from the online route's own code (`_check_generate`, `base_answer_text` /
  `tuned_text`, `_answer`), so online and batch give identical text.
- cancel: CANCELLING for `cancel_delay_s`, then CANCELLED; rows finished before the cancel are
  written (Vertex exports completed rows of a terminated job); an ended job → 400 FAILED_PRECONDITION.
- list filters on `display_name="..."` (also `displayName`); `creates` counts accepted creates.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import random
import re
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from tests.servers import discovery, vertex_datasets
from tests.servers import vertex_schema as schema
from tests.servers.vertex_schema import field as get

if TYPE_CHECKING:
    from tests.servers.vertex_server import VertexTestServer

ENDED = ("SUCCEEDED", "FAILED", "CANCELLED", "EXPIRED", "PARTIALLY_SUCCEEDED")
_FILTER = re.compile(r'^\s*(display_name|displayName)\s*=\s*"([^"]*)"\s*$')


def _rfc3339(t: float) -> str:
    return _dt.datetime.fromtimestamp(t, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class _Row:
    line: int
    request: dict
    fails: str | None = None  # the status of a failed row, decided at create


@dataclass
class _BatchJob:
    number: int
    name: str
    body: dict
    created: float
    timeline: tuple[tuple[str, float], ...]
    outcome: str
    rows: list[_Row]
    out_dir: str
    error: str | None = None  # the whole job fails with this message
    cancel_delay_s: float = 0.3
    cancelled_at: float | None = None
    written: bool = False
    seed: int = 0
    answers: dict[int, dict] = field(default_factory=dict)

    def _running_span(self) -> tuple[float, float]:
        t, start, end = self.created, None, None
        for state, seconds in self.timeline:
            if state == "RUNNING" and start is None:
                start = t
            t += seconds
        end = t
        return (start if start is not None else end), end

    def state(self, now: float) -> str:
        if self.cancelled_at is not None:
            return "CANCELLING" if now - self.cancelled_at < self.cancel_delay_s else "CANCELLED"
        t = now - self.created
        for state, seconds in self.timeline:
            if t < seconds:
                return state
            t -= seconds
        return "FAILED" if self.error else self.outcome

    def processed(self, now: float) -> int:
        """Rows finished by `now` (all at the end; a share of them while RUNNING)."""
        start, end = self._running_span()
        until = min(now, self.cancelled_at) if self.cancelled_at is not None else now
        if self.error or until <= start or (self.outcome in ("FAILED", "EXPIRED") and self.cancelled_at is None):
            return 0  # a job that fails as a whole answers no row
        if until >= end:
            return len(self.rows) if self.cancelled_at is None or self.cancelled_at >= end else 0
        return int(len(self.rows) * (until - start) / max(end - start, 1e-9))

    def end_time(self) -> float:
        if self.cancelled_at is not None:
            return self.cancelled_at + self.cancel_delay_s
        return self.created + sum(s for _, s in self.timeline)


class BatchPredictions:
    """The batchPredictionJobs routes of one VertexTestServer; tests set the knobs on `server.batch`."""

    def __init__(self, server: VertexTestServer, *, seed: int = 0):
        self.server = server
        self.timeline: tuple[tuple[str, float], ...] = (("PENDING", 0.5), ("RUNNING", 1.0))
        self.pending_s: float | None = None  # overrides the PENDING phase of jobs created from now on
        self.outcome = "SUCCEEDED"
        self.fail_rate = 0.0
        self.fail_times = 1
        self.fail_marker: str | None = None
        self.cancel_delay_s = 0.3
        self.creates = 0
        self.cancels = 0
        self._seed = seed
        self._jobs: dict[str, _BatchJob] = {}
        self._failed_runs: dict[str, int] = {}  # hash of (model, prompt) -> times it failed
        self._lock = threading.RLock()

    def routes(self) -> list[tuple[str, Any]]:
        """(discovery method id, handler) of the batchPredictionJobs routes."""
        p = "aiplatform.projects.locations.batchPredictionJobs."
        return [(p + "create", self._create), (p + "list", self._list), (p + "get", self._get),
                (p + "cancel", self._cancel)]

    @property
    def job_names(self) -> list[str]:
        with self._lock:
            return list(self._jobs)

    # ------------------------------------------------------------------ GCS emulator I/O
    def _gcs(self, path: str, data: bytes | None = None, query: str = "") -> bytes | None:
        """GET (or POST `data` to) the emulator; None on 404."""
        base = self.server.gcs_url
        if base is None:
            raise RuntimeError("test server: no gcs_url for batch prediction (pass gcs_url=)")
        req = urllib.request.Request(f"{base}{path}{query}", data=data, method="POST" if data is not None else "GET",
                                     headers={"Content-Type": "application/octet-stream"} if data is not None else {})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.read()
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise

    def _read(self, uri: str) -> bytes | None:
        if self.server.gcs_url is None:
            raise RuntimeError("test server: no gcs_url for batch prediction (pass gcs_url=)")
        return vertex_datasets.read(self.server.gcs_url, uri)

    def _write(self, uri: str, data: bytes) -> None:
        bucket, _, obj = uri[5:].partition("/")
        self._gcs(f"/upload/storage/v1/b/{quote(bucket, safe='')}/o", data=data,
                  query=f"?uploadType=media&name={quote(obj, safe='')}")

    def _bucket_exists(self, bucket: str) -> bool:
        return self._gcs(f"/storage/v1/b/{quote(bucket, safe='')}") is not None

    # ------------------------------------------------------------------ create
    def _model(self, parent: str, model: Any) -> tuple[str, str, str]:
        """(kind, short name or resource, base model) of an existing model, else 404/400 as Vertex."""
        from tests.servers.vertex_server import _HttpError, _invalid

        if not isinstance(model, str) or not model:
            raise _invalid([("model", "model: required")])
        if model.startswith("publishers/google/models/"):
            short = model.removeprefix("publishers/google/models/")
            if short not in self.server.base_models:
                raise _HttpError(404, f"Publisher Model `{parent}/{model}` was not found or your project does not "
                                      "have access to it.")
            return "base", short, short
        m = re.fullmatch(rf"{re.escape(parent)}/models/([^/:@]+)(?:@([^/:]+))?", model)
        if not m:
            raise _invalid([("model", f"Model {model!r} is not a publisher model or a model resource name of "
                                      f"{parent}.")])
        with self.server._lock:
            found = self.server._model(parent, m.group(1), m.group(2))
        return "tuned", found.name, found.base_model

    def _create(self, parent, *, query, body):
        from tests.servers.vertex_server import _HttpError, _invalid

        display = get(body, "display_name")
        if not display:
            raise _invalid([("display_name", "display_name: required")])
        if problems := schema.label_problems(get(body, "labels") or {}):
            raise _invalid(problems)
        if len(display) > schema.DISPLAY_NAME_MAX:
            raise _invalid([("display_name", "display_name must be at most 128 characters.")])
        kind, model, base = self._model(parent, get(body, "model"))
        inp, out = get(body, "input_config") or {}, get(body, "output_config") or {}
        if get(inp, "instances_format") != "jsonl":
            raise _invalid([("input_config.instances_format",
                             f"Unsupported instances format {get(inp, 'instances_format')!r} for Gemini batch "
                             "prediction from Cloud Storage; use jsonl.")])
        uris = get(get(inp, "gcs_source") or {}, "uris") or []
        if isinstance(uris, str):
            uris = [uris]
        if not uris:
            raise _invalid([("input_config.gcs_source.uris", "input_config.gcs_source.uris: required")])
        if get(out, "predictions_format") != "jsonl":
            raise _invalid([("output_config.predictions_format",
                             f"Unsupported predictions format {get(out, 'predictions_format')!r}; use jsonl.")])
        prefix = get(get(out, "gcs_destination") or {}, "output_uri_prefix") or ""
        if not prefix.startswith("gs://") or not prefix[5:].split("/", 1)[0]:
            raise _invalid([("output_config.gcs_destination.output_uri_prefix",
                             f"Invalid Cloud Storage output URI prefix {prefix!r}.")])
        if not self._bucket_exists(prefix[5:].split("/", 1)[0]):
            raise _invalid([("output_config.gcs_destination.output_uri_prefix",
                             f"Bucket of {prefix} does not exist or is not writable by the service account.")])
        rows, error = [], None
        for uri in uris:
            if not uri.startswith("gs://") or "*" in uri:
                raise _invalid([("input_config.gcs_source.uris", f"Invalid Cloud Storage URI {uri!r}.")])
            data = self._read(uri)
            if data is None:
                raise _invalid([("input_config.gcs_source.uris",
                                 f"{uri} does not exist or is not readable by the service account.")])
            for i, raw in enumerate(data.decode("utf-8", errors="replace").splitlines(), start=1):
                if not raw.strip():
                    continue
                try:
                    obj = json.loads(raw)
                    if not isinstance(obj, dict) or not isinstance(obj.get("request"), dict):
                        raise ValueError("no 'request' object")
                except ValueError as exc:
                    error = error or f"Invalid input line {i} of {uri}: {exc}"
                    continue
                rows.append(_Row(len(rows), obj["request"]))
        now = time.time()
        with self._lock:
            number = next(self.server._ids)
            timeline = tuple((s, self.pending_s if s == "PENDING" and self.pending_s is not None else d)
                             for s, d in self.timeline)
            stamp = _dt.datetime.fromtimestamp(now, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            job = _BatchJob(number, f"{parent}/batchPredictionJobs/{number}", body, now, timeline, self.outcome,
                            rows, f"{prefix.rstrip('/')}/prediction-model-{stamp}", error=error,
                            cancel_delay_s=self.cancel_delay_s, seed=self._seed + number)
            for row in rows:
                self._decide(job, row, kind, model, base, parent)
            self._jobs[job.name] = job
            self.creates += 1
            return self._json(job, now)

    def _decide(self, job: _BatchJob, row: _Row, kind: str, model: str, base: str, parent: str) -> None:
        """Answer one row now with the online route's code (what it says does not depend on time)."""
        from tests.servers.vertex_server import _HttpError, base_answer_text

        try:
            problems, request = discovery.check("v1beta1", "GoogleCloudAiplatformV1beta1GenerateContentRequest",
                                                row.request)
            if problems:
                from tests.servers.vertex_server import _invalid

                raise _invalid(problems)
            prompt, config = self.server._check_generate(request, base)
        except _HttpError as exc:
            row.fails = f"Bad Request: {json.dumps({'error': {'code': exc.code, 'message': exc.message, 'status': exc.status}})}"
            return
        h = hashlib.sha256(f"{model}\n{prompt}".encode()).hexdigest()
        draw = int(hashlib.sha256(f"{self._seed}:{h}:{self._failed_runs.get(h, 0)}".encode()).hexdigest()[:8], 16)
        if (self.fail_marker and self.fail_marker in prompt) or (
                self._failed_runs.get(h, 0) < self.fail_times and draw / 2**32 < self.fail_rate):
            self._failed_runs[h] = self._failed_runs.get(h, 0) + 1
            row.fails = ("Internal error occurred. Failed to get generateContentResponse: RESOURCE_EXHAUSTED "
                         "(test server: injected row failure)")
            return
        if kind == "base":
            job.answers[row.line] = self.server._answer(prompt, base_answer_text(prompt), config, model, base)
        else:
            with self.server._lock:
                tuned = self.server._models.get(model)
            text = self.server.tuned_text(prompt, tuned.job if tuned is not None else None)
            job.answers[row.line] = self.server._answer(prompt, text, config, model, base)

    # ------------------------------------------------------------------ state, output
    def _settle(self, job: _BatchJob, now: float) -> None:
        """Write the predictions once the job has ended (all rows, or those done before a cancel)."""
        if job.written or job.state(now) not in ENDED or not job.processed(now):
            return
        done = job.processed(now)
        order = list(range(len(job.rows)))
        random.Random(job.seed).shuffle(order)
        finished = sorted(order[:done]) if job.cancelled_at is not None else order
        random.Random(job.seed + 1).shuffle(finished)
        lines = []
        for i in finished:
            row = job.rows[i]
            rec: dict[str, Any] = {"status": row.fails or "", "processed_time": _rfc3339(job.end_time()),
                                   "request": row.request}
            if not row.fails:
                rec["response"] = job.answers[row.line]
            lines.append(json.dumps(rec))
        if lines:
            self._write(f"{job.out_dir}/predictions.jsonl", ("\n".join(lines) + "\n").encode())
        job.written = True

    def _json(self, job: _BatchJob, now: float) -> dict:
        state = job.state(now)
        out: dict[str, Any] = {
            "name": job.name,
            "displayName": get(job.body, "display_name"),
            "model": get(job.body, "model"),
            "inputConfig": get(job.body, "input_config"),
            "outputConfig": get(job.body, "output_config"),
            "state": f"JOB_STATE_{state}",
            "createTime": _rfc3339(job.created),
            "updateTime": _rfc3339(min(now, job.end_time()) if state in ENDED else now),
        }
        start, _ = job._running_span()
        if now >= start and state not in ("PENDING", "QUEUED") and not (job.cancelled_at and job.cancelled_at < start):
            out["startTime"] = _rfc3339(start)
        done = job.processed(now)
        if state not in ("PENDING", "QUEUED") and not job.error:
            order = list(range(len(job.rows)))
            random.Random(job.seed).shuffle(order)
            failed = sum(1 for i in order[:done] if job.rows[i].fails)
            out["completionStats"] = {"successfulCount": str(done - failed), "failedCount": str(failed),
                                      "incompleteCount": str(len(job.rows) - done)}
        if state in ENDED:
            out["endTime"] = _rfc3339(job.end_time())
            if job.written or done:
                out["outputInfo"] = {"gcsOutputDirectory": job.out_dir}
        if state == "FAILED":
            out["error"] = {"code": 3, "message": job.error or "Batch prediction job failed."}
        elif state == "CANCELLED":
            out["error"] = {"code": 1, "message": "CANCELED"}
        return out

    def _find(self, parent: str, num: str) -> _BatchJob:
        from tests.servers.vertex_server import _HttpError

        job = self._jobs.get(f"{parent}/batchPredictionJobs/{num}")
        if job is None:
            raise _HttpError(404, f"BatchPredictionJob `{parent}/batchPredictionJobs/{num}` not found.")
        return job

    # ------------------------------------------------------------------ get, list, cancel
    def _get(self, parent, num, *, query, body):
        with self._lock:
            job, now = self._find(parent, num), time.time()
            self._settle(job, now)
            return self._json(job, now)

    def _list(self, parent, *, query, body):
        from tests.servers.vertex_server import _HttpError

        text = (query.get("filter") or [""])[0]
        wanted = None
        if text.strip():
            m = _FILTER.match(text)
            if not m:
                raise _HttpError(400, f"Unsupported filter {text!r} (test server supports display_name=\"...\")")
            wanted = m.group(2)
        page_size = int((query.get("pageSize") or ["100"])[0] or 100)
        offset = int((query.get("pageToken") or ["0"])[0] or 0)
        now = time.time()
        with self._lock:
            jobs = [j for j in sorted(self._jobs.values(), key=lambda j: (j.created, j.number), reverse=True)
                    if wanted is None or get(j.body, "display_name") == wanted]
            for j in jobs[offset:offset + page_size]:
                self._settle(j, now)
            page = [self._json(j, now) for j in jobs[offset:offset + page_size]]
        out: dict[str, Any] = {"batchPredictionJobs": page} if page else {}
        if offset + page_size < len(jobs):
            out["nextPageToken"] = str(offset + page_size)
        return out

    def _cancel(self, parent, num, *, query, body):
        from tests.servers.vertex_server import _precondition

        with self._lock:
            job, now = self._find(parent, num), time.time()
            state = job.state(now)
            if state in ENDED:
                raise _precondition(f"Cannot cancel BatchPredictionJob `{job.name}` in state JOB_STATE_{state}.")
            if job.cancelled_at is None:
                job.cancelled_at = now
                self.cancels += 1
            return {}
