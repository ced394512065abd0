"""The offline `local` backend: generation and LoRA tuning on this machine's CPU.

`minilm-extractive` (the default) is an extractive summarizer over MiniLM (see extractive.py);
any other base model is a Hugging Face causal LM tuned and run by generative.py. Jobs run
in detached processes with the same lifecycle as cloud tuning jobs (see jobs.py).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from sftflow.infra import storage
from sftflow.backends.base import Generation, GenerationParams, JobStatus, TuningSpec
from sftflow.backends.local import jobs
from sftflow.errors import BackendError

if TYPE_CHECKING:
    from sftflow.config import Settings

# Before torch is imported (by this backend's modules, here and in the job runner it starts):
# OpenMP threads that spin at every barrier make 2 threads 3-10x slower than 1 when another process
# holds a core (the runner and the flow's evaluation run at once; a shared machine); passive ones sleep.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

log = logging.getLogger(__name__)

MODEL_FILES = ("adapter.safetensors", "head.safetensors", "config.json")

_models: dict[str, object] = {}
_models_lock = threading.Lock()


class LocalGenerator:
    """Generator over a loaded local model (shared per process; the model holds a lock)."""

    def __init__(self, model: str, impl):
        self.model = model
        self._impl = impl

    def generate(self, prompt: str, params: GenerationParams) -> Generation:
        t0 = time.perf_counter()
        try:
            text, n_in, n_out, finish = self._impl.answer(prompt, params)
        except (ValueError, RuntimeError) as exc:
            raise BackendError(f"{self.model}: {exc}") from exc
        return Generation(text=text, finish_reason=finish if text else "EMPTY",
                          latency_s=time.perf_counter() - t0, prompt_tokens=n_in, output_tokens=n_out)


def _fetch_model_dir(settings: Settings, uri: str) -> Path:
    """A local directory holding the tuned model at `uri` (downloaded once if remote)."""
    if not storage.is_gcs(uri):
        d = Path(uri)
        if not (d / "config.json").is_file():
            raise BackendError(f"{uri}: not a tuned model directory (config.json missing)")
        return d
    dest = settings.work_dir / "models_cache" / storage.name_of(uri)
    if not (dest / "config.json").is_file():  # config.json is fetched last: its presence = complete
        names = [storage.name_of(u) for u in storage.list_uris(uri.rstrip("/") + "/")]
        if "config.json" not in names:
            raise BackendError(f"{uri}: no tuned model there (config.json missing)")
        for name in sorted(names, key=lambda n: n == "config.json"):
            storage.download(storage.join(uri, name), dest / name)
    return dest


def _load(settings: Settings, model: str):
    from sftflow.backends.local import extractive

    if model == extractive.MODEL_NAME:
        return extractive.ExtractiveModel.base()
    if model.startswith("local:"):
        model = storage.join(settings.storage_root, "models", model[len("local:"):])
    if storage.is_gcs(model) or (Path(model) / "config.json").is_file() and (Path(model) / "adapter.safetensors").is_file():
        d = _fetch_model_dir(settings, model)
        import json

        kind = json.loads((d / "config.json").read_text()).get("kind")
        if kind == "extractive":
            return extractive.ExtractiveModel.load(d)
        from sftflow.backends.local import generative

        return generative.CausalModel.load(d, seed=settings.seed)
    from sftflow.backends.local import generative

    return generative.CausalModel.base(model, seed=settings.seed)


def make_local_generator(settings: Settings, model: str) -> LocalGenerator:
    """`model`: 'minilm-extractive', a tuned endpoint (models URI or 'local:<job-id>'), or a
    Hugging Face causal LM (local path or cached hub id). Loaded once per process."""
    with _models_lock:
        key = f"{settings.storage_root}|{model}"
        if key not in _models:
            try:
                _models[key] = _load(settings, model)
            except (OSError, ValueError) as exc:
                raise BackendError(f"model {model!r}: cannot load ({exc})") from exc
        return LocalGenerator(model, _models[key])


class LocalTuner:
    """Tuner whose jobs are detached local processes (see jobs.py for the directory layout)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.root = settings.work_dir / "jobs"

    def _dir(self, name: str) -> Path:
        d = self.root / name
        if not (d / "status.json").is_file():
            raise BackendError(f"{name}: no such local tuning job under {self.root}")
        return d

    def request(self, spec: TuningSpec) -> dict:
        """The runner's parameters (spec.json's "spec"): the data, the intent's key and `train`, the trainer's
        TrainParams fields (each hyperparameter under its local name, the seed, the training budget)."""
        train = {**spec.hyperparameters.for_backend("local"), "seed": spec.seed,
                 "budget_s": spec.budget_s or self.settings.local_train_budget_s}
        return {"base_model": spec.base_model, "train_uri": spec.train_uri, "val_uri": spec.val_uri,
                "display_name": spec.display_name, "key": spec.key, "train": train}

    def submit(self, spec: TuningSpec) -> str:
        """A new job; when the intent's last job was cancelled with the same inputs, it starts from that job's
        checkpoint, and when not, the reason is logged and kept in its status (see resume.py)."""
        from sftflow.backends.local import resume

        request = self.request(spec)
        fingerprint = resume.fingerprint(request)
        job_dir = jobs.create(self.root, request, {"storage_root": self.settings.storage_root,
                                                   "run_name": getattr(self.settings, "run_name", None),
                                                   "fingerprint": fingerprint})
        decision = resume.decide(self.root, spec.key, fingerprint, exclude=job_dir.name)
        if decision is not None:
            resume.seed(job_dir, decision, self.settings.storage_root)
            log.info("tuning job %s: %s", job_dir.name, decision.note)
        jobs.launch(job_dir)
        return job_dir.name

    def get(self, name: str) -> JobStatus:
        return jobs.check(self._dir(name))

    def cancel(self, name: str) -> None:
        jobs.request_cancel(self._dir(name))

    def find(self, key: str) -> list[JobStatus]:
        if not self.root.is_dir():
            return []
        found = []
        for d in self.root.iterdir():
            meta = jobs.read_json(d / "spec.json")
            if meta.get("spec", {}).get("key") == key and (d / "status.json").is_file():
                found.append(jobs.to_status(d))
        return sorted(found, key=lambda s: (s.create_time or "", s.name), reverse=True)

    def outputs_exist(self, status: JobStatus) -> bool:
        """The tuned model folder is complete (config.json is written last)."""
        return storage.exists(storage.join(self.settings.storage_root, "models", status.name, "config.json"))

    def mark_champion(self, status: JobStatus, checkpoint_id: str | None = None,
                      previous: JobStatus | None = None) -> str | None:
        """Nothing to mark locally: the champion record in storage is the only mark (a checkpoint champion is
        served from its own folder)."""
        return None

    def delete_outputs(self, status: JobStatus, dry_run: bool = True) -> list[str]:
        root = storage.join(self.settings.storage_root, "models", status.name)
        uris = storage.list_uris(root + "/") if storage.is_gcs(root) else storage.list_uris(root)
        if not dry_run:
            for u in uris:
                storage.delete(u)
            if not storage.is_gcs(root) and Path(root).is_dir():
                for d in sorted(Path(root).rglob("*"), reverse=True):
                    if d.is_dir():
                        d.rmdir()
                Path(root).rmdir()
        return uris


__all__ = ["LocalGenerator", "LocalTuner", "make_local_generator"]
