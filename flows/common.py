"""Turning a flow's run parameters (`sftflow.params.RunParams`) into Settings.

Which value wins is `sftflow.params.PRECEDENCE`. Secrets never travel as parameters (Prefect
stores those in clear in its database and UI): a token comes from the process environment, or
from a Prefect Secret block whose *name* is the field `vertex_access_token_secret_block`; its
value is read here, at run time, into the Settings object only.
"""

from __future__ import annotations

from typing import Any

from pydantic import SecretStr

from sftflow.infra import credentials
from sftflow.infra.time_limit import check_time_limit
from sftflow.config import SECRET_SETTINGS, Settings, load_settings
from sftflow.errors import ConfigError
from sftflow.params import RunParams, refuse_secrets, settings_values
from tasks.results import use_result_storage

MASK = "**********"


def settings_for(params: RunParams | dict[str, Any] | None = None) -> Settings:
    """Settings of a run: its parameters, then its recipe, then the environment, then the defaults."""
    try:
        refuse_secrets(params)
    except ConfigError:
        _scrub_own_parameters()
        raise
    settings = with_secret_block(load_settings(**settings_values(params)))
    credentials.use_token(settings.vertex_access_token)  # Cloud Storage calls use it too
    use_result_storage(settings)  # task results and cache records where every worker of the run sees them
    return settings


def check_infra_time_limit(s: Settings, flow: str, *, evaluates: bool) -> None:
    """Fail at the start of a run that the infrastructure's time limit (infra_timeout_s) would cut short."""
    check_time_limit(flow, s.infra_timeout_s, wait_mode=s.wait_mode, tuning_timeout=s.tuning_timeout,
                     batch_pending_timeout=s.batch_pending_timeout, evaluates=evaluates)


def with_secret_block(s: Settings) -> Settings:
    """`s` with its token read from the named Prefect Secret block, when it has no token of its own."""
    name = s.vertex_access_token_secret_block
    if s.vertex_access_token is not None or not name:
        return s
    from prefect.blocks.system import Secret

    try:
        value = Secret.load(name).get()
    except ValueError as exc:  # Prefect: "Unable to find block document named ..."
        raise ConfigError(
            f"vertex_access_token_secret_block: no Prefect Secret block named {name!r} ({exc}); create it with "
            f"`prefect.blocks.system.Secret(value=TOKEN).save({name!r})`"
        ) from None
    return s.model_copy(update={"vertex_access_token": SecretStr(str(value))})


def _scrub_own_parameters() -> None:
    """Mask secrets in the current flow run's stored parameters (a refused run must not keep them).

    Best effort: outside a flow run, or without an API, there is nothing stored to scrub.
    """
    try:
        from prefect.client.orchestration import get_client
        from prefect.context import FlowRunContext

        ctx = FlowRunContext.get()
        if ctx is None or ctx.flow_run is None:
            return
        params = _masked(dict(ctx.flow_run.parameters or {}))
        with get_client(sync_client=True) as client:
            client.update_flow_run(ctx.flow_run.id, parameters=params)
    except Exception:  # noqa: BLE001 - the refusal itself must still reach the user
        pass


def _masked(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: (MASK if k in SECRET_SETTINGS and v is not None else _masked(v)) for k, v in value.items()}
    return value
