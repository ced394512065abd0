"""Which failures tasks retry: transient ones only (connection, timeout, 408/429/5xx)."""

import urllib.error

import pytest
from google.api_core import exceptions as gexc
from google.genai import errors as genai_errors

from sftflow.errors import BackendError, DataError, StorageError, TransientError
from sftflow.infra.transient import is_transient


@pytest.mark.parametrize("exc", [
    TransientError("x"), ConnectionResetError(), TimeoutError(),
    urllib.error.HTTPError("u", 503, "busy", {}, None), urllib.error.HTTPError("u", 429, "slow", {}, None),
    urllib.error.URLError("refused"),
    gexc.ServiceUnavailable("x"), gexc.TooManyRequests("x"), gexc.InternalServerError("x"),
    genai_errors.ServerError(503, {"error": {"message": "m"}}),
    genai_errors.ClientError(429, {"error": {"message": "m"}}),
])
def test_transient(exc):
    assert is_transient(exc)


@pytest.mark.parametrize("exc", [
    BackendError("x"), DataError([]), StorageError("x"), ValueError("x"), KeyError("x"),
    urllib.error.HTTPError("u", 404, "nope", {}, None),
    gexc.NotFound("x"), gexc.Forbidden("x"), gexc.BadRequest("x"),
    genai_errors.ClientError(400, {"error": {"message": "m"}}),
])
def test_not_transient(exc):
    assert not is_transient(exc)
