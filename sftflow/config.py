"""One typed settings object for every flow, task and CLI command.

Each field's description and default here are the only ones: CLI help, the flows' parameter form
(`sftflow.params.RunParams`), recipes and README's table are made from them. Which source wins is
`sftflow.params.PRECEDENCE` (README 'Configuration'). An invalid value fails at start with the
field's name and what is allowed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from sftflow.infra import layout
from sftflow.errors import ConfigError

#: The public WikiLingua samples that Google's SFT codelab tunes on (the `vertex` default).
PUBLIC_SAMPLES = "gs://github-repo/generative-ai/gemini/tuning/summarization/wikilingua"
PUBLIC_TRAIN = f"{PUBLIC_SAMPLES}/sft_train_samples.jsonl"
PUBLIC_VAL = f"{PUBLIC_SAMPLES}/sft_val_samples.jsonl"
PUBLIC_TEST = f"{PUBLIC_SAMPLES}/sft_test_samples.csv"

#: Base model names that each backend uses when `source_model` is not set.
DEFAULT_SOURCE_MODEL = {"vertex": "gemini-2.5-flash", "local": "minilm-extractive"}

AdapterSize = Literal[1, 2, 4, 8, 16]
SafetyThreshold = Literal[
    "BLOCK_NONE", "BLOCK_ONLY_HIGH", "BLOCK_MEDIUM_AND_ABOVE", "BLOCK_LOW_AND_ABOVE", "OFF"
]


#: Fewest seconds between two polls of a tuning job (network etiquette: a job runs minutes to hours).
MIN_POLL_INTERVAL = 1.0
#: Most seconds between two polls of a local job: a file read, while a whole local job takes minutes.
LOCAL_POLL_INTERVAL = 5.0


class Settings(BaseSettings):
    """Everything a run can be configured with. See README 'Configuration'."""

    model_config = SettingsConfigDict(
        env_prefix="SFTFLOW_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",  # a shared .env may hold other tools' variables; overrides are checked below
        validate_default=True,
        populate_by_name=True,
    )

    # --- where things run and live -------------------------------------------------------
    backend: Literal["local", "vertex"] = Field(
        "local", description="'local' tunes and generates on this machine; 'vertex' uses Vertex AI."
    )
    project: str | None = Field(None, description="Google Cloud project id (required by the vertex backend).")
    region: str = Field("us-central1", description="Vertex AI region.")
    bucket: str | None = Field(
        None,
        description="Cloud Storage bucket (name or gs://name[/prefix]) for datasets and results. "
        "Unset: everything is stored under local_root (vertex: prepare and tune need a bucket).",
    )
    local_root: Path = Field(Path(".sftflow"), description="Local storage root and work area (downloads, checkpoints, "
                             "job processes, Prefect results).")
    run_name: str = Field(
        "default",
        pattern=layout.NAME_PATTERN,
        description="Names the run: its results live under `<storage>/runs/<run_name>/`.",
    )
    prefect_server: Literal["auto", "ephemeral"] = Field(
        "auto",
        description="Which Prefect API a command uses when PREFECT_API_URL is not set: 'auto' reuses the "
        "local server `sftflow server start` left running (if it answers), else starts Prefect's "
        "temporary one; 'ephemeral' always uses the temporary one.",
    )

    # --- data ----------------------------------------------------------------------------
    train_uri: str | None = Field(
        None, description="Training data (chat JSONL: gs://, https:// or a path; `tune`: converted data). Unset: "
        "the backend's (local: the embedded samples; vertex: the codelab's public WikiLingua files); `tune`: "
        "what `prepare` made for this run.")
    val_uri: str | None = Field(None, description="Validation data (chat JSONL). Unset: as train_uri.")
    test_uri: str | None = Field(
        None, description="Test set (CSV with input_text,output_text). Unset: as train_uri.")
    limit: int = Field(1000, ge=1, description="Examples kept per converted file (the codelab keeps 1000).")
    shuffle_seed: int | None = Field(None, description="Shuffle examples with this seed before the limit. Unset: "
                                     "keep file order.")
    price_per_million_training_tokens: float = Field(
        5.0,
        ge=0,
        description="USD per 1M training tokens, for the cost estimate. Source: Vertex AI "
        "pricing page for Gemini 2.5 Flash supervised tuning as listed in 2025 ($5 / 1M "
        "training tokens); not verifiable offline, so set it to your contract's price.",
    )
    max_tuning_cost_usd: float = Field(
        25.0,
        ge=0,
        description="Hard cap in USD: a tuning job whose estimated cost (training tokens × epochs × price) "
        "is above it is not submitted. Attaching to an existing job or reusing a finished one is not capped.",
    )
    approve_above_usd: float = Field(
        5.0, ge=0, description="A new tuning job whose estimate is above this needs approval: in the Prefect UI "
        "(the run pauses for a typed yes/no), or on the command line (a y/N prompt, or --approve).",
    )
    approval_mode: Literal["ui", "suspend", "prompt", "approved", "refuse"] = Field(
        "ui", description="How approval is asked: 'ui' pauses the run for input in the Prefect UI; 'suspend' (deployment "
        "runs) suspends it instead, ending its process until the UI's answer starts it again from the top; 'prompt' "
        "asks y/N on this terminal; 'approved' is given in advance (CLI --approve); 'refuse' refuses. The CLI sets it.",
    )
    approval_timeout_s: float = Field(
        24 * 3600.0, gt=0, description="Seconds a run paused for approval waits; then it ends with no job.",
    )
    generation_prices_usd: dict[str, tuple[float, float]] = Field(
        {}, description="USD per 1M (input, output) tokens per base model, for what a run's "
        "evaluations cost; overrides the Vertex AI list prices in sftflow/cost/prices.py "
        "(https://cloud.google.com/vertex-ai/generative-ai/pricing). A tuned endpoint is priced as its base model.",
    )
    count_tokens_rpm: float = Field(
        600.0, gt=0, description="countTokens requests per minute at most, counting the tuning data's tokens "
        "(vertex; free, once per dataset content).",
    )

    # --- tuning --------------------------------------------------------------------------
    source_model: str | None = Field(
        None, description="Base model to tune and evaluate. Unset: per backend ("
        + ", ".join(f"{m} on {b}" for b, m in DEFAULT_SOURCE_MODEL.items())
        + "); local also takes a Hugging Face causal LM path.")
    epochs: int = Field(1, ge=1, le=100, description="Tuning epochs.")
    adapter_size: AdapterSize = Field(4, description="LoRA adapter size (rank): 1, 2, 4, 8 or 16.")
    learning_rate_multiplier: float = Field(1.0, gt=0, le=100, description="Learning-rate multiplier.")
    tuned_model_display_name: str = Field(
        "sftflow-summarizer", min_length=1, max_length=128, description="Display name of the tuned model."
    )
    poll_interval: float = Field(
        60.0, description=f"Seconds between tuning-job polls (at least {MIN_POLL_INTERVAL:g}: each poll is an API "
        f"request, and a job takes minutes to hours; local jobs: at most {LOCAL_POLL_INTERVAL:g})."
    )
    tuning_timeout: float = Field(4 * 3600.0, gt=0, description="Give up waiting for a job after this many seconds.")
    cancel_job_on_timeout: bool = Field(
        True, description="Cancel the job when tuning_timeout runs out (and confirm it stopped); "
        "false: leave it running, and billing."
    )
    cancel_job_on_interrupt: bool = Field(
        True, description="Cancel the cloud job when the flow's process is cancelled or interrupted (false: a "
        "rerun attaches to it). A run cancelled while suspended (wait_mode suspend) has its job cancelled by the "
        "resume_finished deployment either way: only a person or an automation cancels a suspended run, never a "
        "container's time limit."
    )
    wait_mode: Literal["poll", "suspend"] = Field(
        "poll", description="How a run waits for its tuning job: 'poll' keeps the flow's process polling every "
        "poll_interval; 'suspend' (deployment runs) suspends the run once the job is submitted, so its worker and "
        "infrastructure are released, and the `resume_finished` deployment resumes it when the job has ended (or "
        "tuning_timeout ran out); the resumed run re-attaches to the job and continues from cache.",
    )
    claim_stale_after: float = Field(
        300.0,
        gt=0,
        description="Seconds after which another process's claim on a tuning intent that still names no job "
        "is taken over (its claimant died before submitting).",
    )
    lease_ttl_s: float = Field(
        60.0,
        gt=0,
        description="Seconds a lease in the bucket (an evaluation checkpoint's single writer) lasts unless its "
        "holder renews it (every third of it); a killed holder blocks other machines at most this long.",
    )
    prefect_result_storage: str | None = Field(
        None,
        description="Where Prefect keeps task results and cache records, so any worker serves a cached step: "
        "gs://bucket/prefix, or the name of a prefect-gcp GcsBucket block. Unset: <storage>/prefect-results when "
        "a bucket is set, else PREFECT_RESULTS_LOCAL_STORAGE_PATH (<local_root>/prefect-results).",
    )
    infra_timeout_s: float | None = Field(
        None,
        gt=0,
        description="Seconds the infrastructure a flow runs in lets it live (Cloud Run timeout, Vertex AI "
        "maximum_run_time_hours; the gcp deployment sets it): a pipeline or tune run that needs longer (tuning_timeout "
        "+ batch_pending_timeout + 1 h while polling; the work between suspensions with wait_mode suspend) fails "
        "at its start, naming both. Unset: no limit known, no check.",
    )
    resubmit_failed: bool = Field(
        False, description="Submit a new job when the one for this intent failed or was cancelled."
    )
    seed: int = Field(0, description="Seed for local tuning and sampling.")
    local_train_budget_s: float = Field(
        90.0, gt=0, description="Local backend: wall-clock ceiling for training, summed across restarts after a crash "
        "(the one-off sentence encoding before it is not counted, and is reused across runs on the same data)."
    )

    # --- evaluation ----------------------------------------------------------------------
    temperature: float = Field(0.1, ge=0, le=2, description="Generation temperature.")
    max_output_tokens: int = Field(1024, ge=1, le=65536, description="Generation max output tokens.")
    safety_threshold: SafetyThreshold = Field(
        "BLOCK_ONLY_HIGH", description="Block threshold on the four harm categories."
    )
    samples: int = Field(50, ge=1, description="Test examples to evaluate (first N).")
    concurrency: int = Field(8, ge=1, le=256, description="Concurrent generation requests.")
    rpm: float = Field(300.0, gt=0, description="Generation requests per minute, at most.")
    max_attempts: int = Field(6, ge=1, le=20, description="Tries per request on 429/5xx/timeouts (a server's "
                              "Retry-After is honoured, up to 120 s).")
    request_timeout: float = Field(120.0, gt=0, description="Seconds before one generation request times out.")
    max_error_rate: float = Field(
        0.05,
        ge=0,
        le=1,
        description="Fail an evaluation when more than this share of its examples end in errors "
        "(401, 404, retries exhausted, ...). Any errored evaluation is never cached; a rerun asks "
        "exactly the errored examples again.",
    )
    promotion_margin: float = Field(
        0.0, ge=0, le=1, description="A tuned model (pipeline) or a sweep's best replaces the champion only if the "
        "lower bound of the paired 95% CI of (new − champion) ROUGE-L is above this "
        "(F-measure units: 0.01 = 1 point).",
    )

    promotion_metric: Literal["rougeL", "judge"] = Field(
        "rougeL", description="What promotes a champion and ranks a sweep: 'rougeL' (the paired CI of the ROUGE-L "
        "difference, see promotion_margin) or 'judge' (the pairwise judge's win rate: promoted only when the lower "
        "bound of its 95% CI is above 50% + promotion_margin; needs a judge).",
    )
    judge: Literal["none", "auto", "vertex", "local"] = Field(
        "auto", description="Pairwise judge of tuned vs base answers after the ROUGE comparison: 'vertex' (the Gen AI "
        "evaluation service's pairwise summarization quality autorater), 'local' (embedding similarity under MiniLM, "
        "not an LLM), 'auto' (the backend's) or 'none'.",
    )
    judge_samples: int | None = Field(
        None, ge=1, description="Pairs the judge sees (the first N both models answered). Unset: the evaluation's "
        "samples, at most 100.",
    )
    judge_model: str | None = Field(
        None, description="Autorater model of the vertex judge (autoraterConfig.autoraterModel: a publisher model "
        "name or endpoint). Unset: the evaluation service's own (gemini-2.0-flash, priced as such).",
    )

    eval_mode: Literal["auto", "batch", "online"] = Field(
        "auto",
        description="How evaluations ask the model: 'online' (one request per example), 'batch' (Vertex AI "
        "batch prediction: half the price, no per-minute quota, minutes to hours of queueing) or 'auto' "
        "(batch on vertex with a bucket and at least batch_min_examples examples; online otherwise and on local).",
    )
    batch_min_examples: int = Field(500, ge=1, description="eval_mode=auto: evaluate in batch from this many examples.")
    batch_pending_timeout: float = Field(
        2 * 3600.0, gt=0, description="Seconds a batch job may stay PENDING before it is cancelled (and the "
        "remaining examples go online, see batch_fallback_online).",
    )
    batch_fallback_online: bool = Field(
        True, description="When a batch job is cancelled for staying PENDING too long, or fails as a whole, evaluate "
        "the remaining examples online; false: fail (PENDING), or count them as errored examples (failed job).",
    )
    batch_online_below: int = Field(
        50, ge=0, description="Failed batch rows are asked again in a follow-up batch job, or online when fewer "
        "than this many remain.",
    )
    batch_poll_interval: float = Field(30.0, ge=MIN_POLL_INTERVAL, description="Seconds between batch-job polls.")

    # --- Vertex connection -----------------------------------------------------------------
    vertex_base_url: str | None = Field(
        None,
        validation_alias=AliasChoices("vertex_base_url", "SFTFLOW_VERTEX_BASE_URL"),
        description="Base URL handed to the Google SDKs (e.g. a test server on 127.0.0.1). Unset: Google's.",
    )
    vertex_access_token: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("vertex_access_token", "SFTFLOW_VERTEX_ACCESS_TOKEN"),
        description="Static bearer token (e.g. `gcloud auth print-access-token`) used instead of "
        "application-default credentials, for Vertex AI and Cloud Storage alike. Unset: application-default "
        "credentials. Never logged, "
        "never a flow parameter: give it in the environment (SFTFLOW_VERTEX_ACCESS_TOKEN) or name a Prefect "
        "Secret block in vertex_access_token_secret_block.",
    )
    vertex_access_token_secret_block: str | None = Field(
        None,
        description="Name of a Prefect Secret block holding the Vertex access token; flows read it at run time "
        "(for deployments), so the token is never a parameter. Ignored when a token is set directly. Unset: "
        "no block.",
    )

    @field_validator("poll_interval")
    @classmethod
    def _check_poll_interval(cls, v: float) -> float:
        if v < MIN_POLL_INTERVAL:
            raise ValueError(
                f"poll_interval (SFTFLOW_POLL_INTERVAL): at least {MIN_POLL_INTERVAL:g} s between tuning-job polls "
                f"(each poll is an API request), got {v:g}"
            )
        return v

    @model_validator(mode="after")
    def _check_backend(self) -> Settings:
        if self.backend == "vertex" and not self.project:
            raise ValueError(
                "project: required when backend is 'vertex' (set SFTFLOW_PROJECT or --project)"
            )
        return self

    def require_bucket(self, step: str) -> None:
        """Vertex AI reads tuning data only from Cloud Storage: `prepare` (its upload), `tune` and
        `pipeline` need a bucket; evaluate and compare do not (results stay under local_root).
        Raises ConfigError (one line) before `step` does any work."""
        if self.backend == "vertex" and not self.bucket:
            raise ConfigError(
                f"bucket: required for `{step}` on the vertex backend — Vertex AI reads tuning data "
                "from Cloud Storage (set SFTFLOW_BUCKET or --bucket)"
            )

    # --- derived values ------------------------------------------------------------------
    @property
    def tuning_poll_interval(self) -> float:
        """poll_interval, capped for the local backend (its job status is a file on this machine)."""
        return min(self.poll_interval, LOCAL_POLL_INTERVAL) if self.backend == "local" else self.poll_interval

    @property
    def base_model(self) -> str:
        return self.source_model or DEFAULT_SOURCE_MODEL[self.backend]

    @property
    def storage_root(self) -> str:
        """Root URI of everything a run stores: gs://bucket[/prefix] or a local directory."""
        if self.bucket:
            b = self.bucket.rstrip("/")
            return b if b.startswith("gs://") else f"gs://{b}"
        return str(self.local_root.resolve())

    @property
    def result_storage(self) -> str | None:
        """Where Prefect's results and cache records go: a gs:// URI, a GcsBucket block name, or None
        (Prefect's local default)."""
        if self.prefect_result_storage:
            return self.prefect_result_storage.rstrip("/")
        if self.bucket:
            return f"{self.storage_root}/prefect-results"
        return None

    @property
    def run_root(self) -> str:
        return layout.run_root(self.storage_root, self.run_name)

    @property
    def work_dir(self) -> Path:
        """Local scratch space (downloads, checkpoints, job processes); always on this disk."""
        return self.local_root.resolve() / "work"

    def sources(self) -> dict[str, str]:
        """Train/val/test source URIs: explicit values, else the backend's default data."""
        if self.backend == "vertex":
            defaults = {"train": PUBLIC_TRAIN, "val": PUBLIC_VAL, "test": PUBLIC_TEST}
        else:
            from sftflow.data.samples import sample_paths

            defaults = sample_paths()
        return {
            "train": self.train_uri or defaults["train"],
            "val": self.val_uri or defaults["val"],
            "test": self.test_uri or defaults["test"],
        }

    def public_dict(self) -> dict[str, Any]:
        """Settings as plain data with secrets masked, fit for logs and reports."""
        data = self.model_dump(mode="json")
        if self.vertex_access_token is not None:
            data["vertex_access_token"] = "**********"
        return data


#: Settings that hold secrets: never accepted as flow parameters (Prefect stores parameters in clear).
SECRET_SETTINGS: tuple[str, ...] = tuple(
    name for name, f in Settings.model_fields.items() if "SecretStr" in str(f.annotation)
)


def setting_default(name: str) -> Any:
    """The default of Settings' field `name`: the one number other modules' defaults take."""
    return Settings.model_fields[name].default


def format_default(name: str) -> str:
    """A field's default as users write it (`90`, `true`, `.sftflow`, `unset`)."""
    value = setting_default(name)
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def default_text(name: str) -> str:
    """`Default: X (SFTFLOW_NAME).`: how CLI help and the flows' parameter form state a default."""
    return f"Default: {format_default(name)} (SFTFLOW_{name.upper()})."


def check_known(names: Any) -> None:
    """ConfigError naming any of `names` that is no setting, and the known ones."""
    import difflib

    unknown = sorted(set(names) - set(Settings.model_fields))
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(Settings.model_fields), n=2, cutoff=0.6)
        hint = (f"did you mean {' or '.join(close)}?" if close
                else f"known: {', '.join(sorted(Settings.model_fields))}")
        raise ConfigError(f"invalid configuration: {', '.join(unknown)}: unknown setting ({hint})")


def load_settings(*, given_as: dict[str, str] | None = None, **overrides: Any) -> Settings:
    """Build Settings from env/.env plus overrides; `None` overrides are ignored.

    Raises ConfigError with one line per invalid field: `field: problem (allowed: ...)`.
    """
    clean = {k: v for k, v in overrides.items() if v is not None}
    check_known(clean)
    try:
        return Settings(**clean)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, given_as)) from None


def format_validation_error(exc: ValidationError, given: dict[str, str] | None = None) -> str:
    """One line per invalid field: `field (SFTFLOW_FIELD): problem, got VALUE` (secrets not shown); a field in
    `given` is named as given there instead (the CLI: `--samples`, `--set NAME`)."""
    lines = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "settings"
        msg = err["msg"]
        if msg.startswith("Value error, "):
            lines.append(f"invalid configuration: {msg[len('Value error, '):]}")
            continue
        pattern = (err.get("ctx") or {}).get("pattern")
        if err.get("type") == "string_pattern_mismatch" and pattern == layout.NAME_PATTERN:
            msg = f"must be {layout.NAME_RULE}"
        shown = "" if "token" in field else f", got {err.get('input')!r}"
        if given and field in given:
            lines.append(f"invalid configuration: {given[field]}: {msg}{shown}")
            continue
        env = f" (SFTFLOW_{field.upper()})" if field in Settings.model_fields else ""
        lines.append(f"invalid configuration: {field}{env}: {msg}{shown}")
    return "\n".join(lines)
