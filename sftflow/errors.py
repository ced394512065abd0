"""The errors sftflow raises on purpose, at the bottom of the package so every layer can use them.

`SftflowError` marks an error whose message is the whole story — bad input or configuration,
a refused or failed request, a job that ended badly — so the CLI prints it as one line and the
console hides its traceback (the Prefect UI keeps it). Anything else is a bug and keeps its
traceback. Errors that carry a domain object (`tuning.JobFailed` and `polling.JobTimeout` with
the job's status, `cost.CostCapExceeded` and `approval.ApprovalDenied` with the estimate) live beside
that object and subclass `SftflowError`.

Each class keeps the builtin base it had before (ValueError, RuntimeError, ...), so an
`except ValueError` written against it still catches it.
"""

from __future__ import annotations

from collections.abc import Iterable


class SftflowError(Exception):
    """An error sftflow raises on purpose; its message says what went wrong and what to do."""


# --------------------------------------------------------------------------- input and configuration


class ConfigError(SftflowError, ValueError):
    """A setting is missing or invalid; the message names the field and what is allowed."""


class LayoutError(SftflowError, ValueError):
    """A name or path piece that is not allowed (it could place a file outside its run)."""


class DataError(SftflowError, ValueError):
    """A data file broke one or more rules; `.problems` lists them (maybe capped).

    A problem is anything whose `str()` is one `path:line: field: message` line
    (`sftflow.data.rules.Problem`).
    """

    def __init__(self, problems: Iterable[object], count: int | None = None):
        self.problems = list(problems)
        self.count = max(count or 0, len(self.problems))
        lines = [str(p) for p in self.problems]
        if self.count > len(self.problems):
            lines.append(f"... and {self.count - len(self.problems)} more problems")
        super().__init__("\n".join(lines))

    def __repr__(self) -> str:
        # Short: orchestrators log repr(exc) on one line; str() keeps the full list.
        first = repr(str(self.problems[0])) if self.problems else ""
        more = f" and {self.count - 1} more problem(s)" if self.count > 1 else ""
        return f"DataError({first}{more})"


class CredentialsError(SftflowError):
    """Credentials were configured but cannot be used (unreadable key file, bad ADC file)."""


# --------------------------------------------------------------------------- storage and checkpoints


class StorageError(SftflowError):
    """A storage operation failed permanently (missing object, bad URI, no permission)."""


class CheckpointError(SftflowError, ValueError):
    """A checkpoint file cannot be used (corrupt line in the middle, results of another model)."""


class CheckpointBusy(CheckpointError):
    """Another process is evaluating into the same checkpoint right now."""


# --------------------------------------------------------------------------- backends and runs


class _KindedError(SftflowError):
    """An error that can say which kind it is (`kind`, e.g. "401 UNAUTHENTICATED"), so that a
    report can count failures per kind instead of listing every message."""

    def __init__(self, message: str = "", *, kind: str | None = None):
        super().__init__(message)
        self.kind = kind or type(self).__name__


class TransientError(_KindedError):
    """A failure worth retrying (HTTP 408/429/5xx, timeouts, dropped connections).

    Backends translate their SDK's transient errors into this so that retry logic lives in
    one place (evaluation, polling) and never needs to know an SDK's exception classes.
    `retry_after`: seconds the server asked us to wait (its `Retry-After` header), if it did.
    """

    def __init__(self, message: str = "", *, kind: str | None = None, retry_after: float | None = None):
        super().__init__(message, kind=kind)
        self.retry_after = retry_after


class BackendError(_KindedError):
    """A permanent failure reported by a backend (bad request, missing model, ...)."""


class EvaluationFailed(SftflowError):
    """More examples ended in errors than `max_error_rate` allows; one line per error kind."""


class ServerError(SftflowError, RuntimeError):
    """The local Prefect server could not be started or stopped; the message says why and what to do."""
