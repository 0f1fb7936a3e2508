"""The Prefect port: what the webhook asks of Prefect, and the default adapter, named rather
than imported."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from restorekit.registry import import_path
from restorekit.webhook.rules import WebhookConfig

# ------------------------------------------------------------------------------- Prefect port


@dataclass(frozen=True, slots=True)
class DeploymentRef:
    """A deployment as Prefect reports it: its id and its default parameters."""

    id: str
    name: str  # "flow-name/deployment-name"
    parameters: dict[str, Any] = field(default_factory=dict)


def merge_parameters(defaults: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``overrides`` deep-merged over ``defaults`` (a fresh copy; neither input is changed).

    Prefect merges a run's parameters over the deployment's defaults one level deep only, so
    ``{"params": {"incident_id": ...}}`` would replace the whole ``params`` object of a scenario
    deployment (its target, config path and ``require_approval``). Tables merge key by key;
    anything else, including Prefect's hydration markers (``__prefect_kind``), is replaced.
    """
    merged = copy.deepcopy(dict(defaults))
    for key, value in overrides.items():
        base = merged.get(key)
        if (isinstance(base, dict) and isinstance(value, Mapping)
                and "__prefect_kind" not in base and "__prefect_kind" not in value):
            merged[key] = merge_parameters(base, value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


@dataclass(frozen=True, slots=True)
class FlowRunRef:
    """A flow run Prefect created, or returned because its idempotency key was already used.

    Attributes:
        created: True for a new run (HTTP 201), False for an existing one (HTTP 200).
    """

    id: str
    name: str
    deployment_id: str
    created: bool
    idempotency_key: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    state_name: str | None = None


class FlowRuns(Protocol):
    """Where the webhook starts runs: Prefect, through its own client
    (``deployments.flow_runs.PrefectFlowRuns``, the default), or a fake in tests.

    Contract: both calls block for at most the configured timeout and do not retry (PagerDuty
    retries the delivery, and the idempotency key makes that safe); every failure is a
    :class:`ProviderError` with ``provider="prefect"``, retryable for connection failures,
    timeouts, 408, 429 and 5xx, not retryable for an unknown deployment (404), parameters that
    fail the deployment's schema (409), refused credentials (401/403) and other 4xx. Nothing
    raised, logged or shown by ``repr`` contains the credential.
    """

    def deployment(self, name: str) -> DeploymentRef:
        """The deployment ``"flow-name/deployment-name"``, with its default parameters."""
        ...

    def create_flow_run(
        self,
        deployment_id: str,
        parameters: Mapping[str, Any],
        idempotency_key: str | None = None,
        tags: Sequence[str] = (),
        name: str | None = None,
    ) -> FlowRunRef:
        """A run of the deployment: new (``created``), or the one an earlier call with the same
        ``idempotency_key`` created (``created`` False)."""
        ...

    def close(self) -> None: ...


#: The default :class:`FlowRuns`, named rather than imported: it imports Prefect, which the
#: core does not (the registry pattern of restorekit.sinks.base).
PREFECT_FLOW_RUNS = "deployments.flow_runs:PrefectFlowRuns"


def prefect_flow_runs(config: WebhookConfig, environ: Mapping[str, str] | None = None) -> FlowRuns:
    """The default :class:`FlowRuns`: Prefect's own client, built from ``config``.

    Raises:
        ConfigError: No Prefect API URL, or ``prefect_auth_env`` names an unset variable.
    """
    factory: Any = import_path(PREFECT_FLOW_RUNS)
    runs: FlowRuns = factory.from_config(config, environ)
    return runs
