"""The terminal shows a user error's message, not its traceback.

When a task fails on a bad path or bad data, the orchestrator logs the exception with its
traceback (twice: for the task and for the flow), burying the one line that says what to fix.
`hide_user_error_tracebacks` wraps the formatter of every console handler so that a log
record carrying a user error prints its message alone. Records are never modified: other
handlers (e.g. one that ships logs to a server and its UI) still get the full traceback, and
so does every error that is not a user error. Plain `logging`; nothing orchestrator-specific.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

IsUserError = Callable[[BaseException], bool]


class WithoutUserErrorTraceback(logging.Formatter):
    """Formats like `inner`, leaving out the traceback when the record's exception is a user error."""

    def __init__(self, inner: logging.Formatter | None, is_user_error: IsUserError):
        super().__init__()
        self.inner = inner or logging.Formatter()
        self.is_user_error = is_user_error

    def format(self, record: logging.LogRecord) -> str:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and self.is_user_error(exc):
            record = logging.makeLogRecord({**record.__dict__, "exc_info": None, "exc_text": None})
        return self.inner.format(record)


def _console_handlers(logger_prefixes: tuple[str, ...]) -> list[logging.StreamHandler]:
    loggers = [logging.getLogger()] + [
        logging.getLogger(name) for name in list(logging.root.manager.loggerDict)
        if name.startswith(logger_prefixes)
    ]
    seen: dict[int, logging.StreamHandler] = {}
    for logger in loggers:
        for h in logger.handlers:
            # a terminal stream; a log file keeps its tracebacks
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
                seen.setdefault(id(h), h)
    return list(seen.values())


def hide_user_error_tracebacks(
    is_user_error: IsUserError, logger_prefixes: tuple[str, ...] = ("prefect",)
) -> Callable[[], None]:
    """Wrap the console handlers of the root logger and of loggers named `logger_prefixes*`.

    Call it after the logging configuration exists. Returns a function that undoes it.
    """
    wrapped: list[tuple[logging.Handler, logging.Formatter | None]] = []
    for h in _console_handlers(logger_prefixes):
        if isinstance(h.formatter, WithoutUserErrorTraceback):
            continue
        wrapped.append((h, h.formatter))
        h.setFormatter(WithoutUserErrorTraceback(h.formatter, is_user_error))

    def undo() -> None:
        for h, formatter in wrapped:
            h.setFormatter(formatter)  # type: ignore[arg-type]

    return undo
