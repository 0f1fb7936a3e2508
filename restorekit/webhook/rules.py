"""``[webhook]`` and ``[[webhook.rules]]``: which events start which deployment, and how
fresh they must be."""

from __future__ import annotations

import copy
import logging
import os
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from restorekit.errors import ConfigError
from restorekit.webhook.events import PagerDutyEvent

log = logging.getLogger(__name__)

#: How far ``occurred_at`` may lie in the future (clock skew between PagerDuty and us).
MAX_FUTURE_SKEW_SECONDS = 60.0
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DEPLOYMENT = re.compile(r"^[^/]+/[^/]+$")
_PARAM_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


# --------------------------------------------------------------------------------------- config


def _env_name(value: str, what: str) -> str:
    if not _ENV_NAME.match(value):
        # Never echo the value: a secret pasted here by mistake must not reach a log.
        raise ValueError(
            f"{what} must be the NAME of an environment variable (e.g. "
            "PAGERDUTY_WEBHOOK_SECRET), not the value itself"
        )
    return value


class WebhookRule(BaseModel):
    """Which PagerDuty events start which Prefect deployment, and with which parameters.

    Every condition that is set must hold; conditions left unset match anything. The rule
    matches only events that carry an incident (``data.type == "incident"``).

    Attributes:
        event_types: PagerDuty event types, e.g. ``incident.triggered``.
        service_id: The PagerDuty service id (``data.service.id``), e.g. ``PF9KMXH``.
        service_name: The service's name (``data.service.summary``), compared case-insensitively.
        title_contains: A substring of the incident title, compared case-insensitively.
        priorities: Priority names (``data.priority.summary``) such as ``["P1", "P2"]``. An
            incident without a priority never matches a rule that lists priorities.
        urgency: ``high`` or ``low``.
        deployment: ``"flow-name/deployment-name"`` as Prefect shows it.
        parameters: Deep-merged over the deployment's default parameters (see
            :func:`merge_parameters`), so a rule names only what differs from the deployment.
        incident_parameter: Where the incident id goes in the parameters. A dotted path
            reaches into a model parameter: ``params.incident_id`` for the scenario flows,
            which take ``params: <Scenario>Params``.
        tags: Extra flow-run tags, added to ``restorekit``, ``pagerduty`` and
            ``pagerduty-incident:<id>``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_types: tuple[str, ...] = Field(default=("incident.triggered",), min_length=1)
    service_id: str | None = None
    service_name: str | None = None
    title_contains: str | None = None
    priorities: tuple[str, ...] = ()
    urgency: Literal["high", "low"] | None = None
    deployment: str
    parameters: dict[str, Any] = Field(default_factory=dict)
    incident_parameter: str = "incident_id"
    tags: tuple[str, ...] = ()

    @field_validator("deployment")
    @classmethod
    def _deployment_name(cls, value: str) -> str:
        if not _DEPLOYMENT.match(value):
            raise ValueError(f"deployment {value!r} must look like 'flow-name/deployment-name'")
        return value

    @model_validator(mode="after")
    def _incident_parameter_fits(self) -> WebhookRule:
        if not _PARAM_PATH.match(self.incident_parameter):
            raise ValueError(
                f"incident_parameter {self.incident_parameter!r} must be a parameter name or a "
                "dotted path such as 'params.incident_id'"
            )
        node: Any = self.parameters
        for part in self.incident_parameter.split(".")[:-1]:
            node = node.get(part, {}) if isinstance(node, dict) else None
            if not isinstance(node, dict):
                raise ValueError(
                    f"incident_parameter {self.incident_parameter!r}: parameters[{part!r}] "
                    "is not a table"
                )
        return self

    @property
    def flow_name(self) -> str:
        return self.deployment.split("/", 1)[0]

    @property
    def deployment_name(self) -> str:
        return self.deployment.split("/", 1)[1]

    def matches(self, event: PagerDutyEvent) -> bool:
        """True when ``event`` satisfies every condition this rule sets."""
        incident = event.data
        if incident is None or event.event_type not in self.event_types:
            return False
        if self.service_id is not None and incident.service.id != self.service_id:
            return False
        if (self.service_name is not None
                and incident.service.summary.casefold() != self.service_name.casefold()):
            return False
        if (self.title_contains is not None
                and self.title_contains.casefold() not in incident.title.casefold()):
            return False
        if self.priorities:
            wanted = {p.casefold() for p in self.priorities}
            if incident.priority is None or incident.priority.summary.casefold() not in wanted:
                return False
        return self.urgency is None or incident.urgency == self.urgency

    def run_parameters(self, event: PagerDutyEvent) -> dict[str, Any]:
        """``parameters`` with the incident id placed at ``incident_parameter`` (a fresh copy)."""
        assert event.data is not None
        params = copy.deepcopy(self.parameters)
        *parents, leaf = self.incident_parameter.split(".")
        node = params
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = event.data.id
        return params


class WebhookConfig(BaseModel):
    """The ``[webhook]`` section: who may start which flow.

    Attributes:
        secret_env: Name of the environment variable holding the PagerDuty webhook
            subscription's signing secret.
        extra_secret_envs: More secrets to accept: other subscriptions that deliver to this
            endpoint, or the previous secret while a rotation is under way.
        max_age_seconds: Events whose ``occurred_at`` is older are refused (replay guard).
            PagerDuty retries a failing delivery for about 20 minutes, so a retry that comes
            after this age is refused as well.
        max_body_bytes: Larger bodies are refused without being read in full. PagerDuty
            drops webhooks over 256 KiB itself.
        prefect_api_url: The Prefect API, e.g. ``http://prefect:4200/api``. The default is
            ``$PREFECT_API_URL``.
        prefect_auth_env: Name of the environment variable holding ``user:password`` (sent as
            HTTP Basic, for a self-hosted server with ``PREFECT_SERVER_API_AUTH_STRING``) or an
            API key (sent as Bearer, for Prefect Cloud). When unset, ``$PREFECT_API_KEY`` and
            then ``$PREFECT_API_AUTH_STRING`` are used when set, as Prefect's own client does.
        prefect_timeout_seconds: Timeout of each Prefect request. PagerDuty waits 5 s for
            the whole answer, which includes two requests.
        rules: Tried in order; the first that matches decides.
    """

    # A secret pasted into secret_env by mistake must not come back in the error's text.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    secret_env: str
    extra_secret_envs: tuple[str, ...] = ()
    max_age_seconds: int = Field(default=600, ge=1)
    max_body_bytes: int = Field(default=256 * 1024, ge=1024, le=16 * 1024 * 1024)
    prefect_api_url: str | None = None
    prefect_auth_env: str | None = None
    prefect_timeout_seconds: float = Field(default=2.0, gt=0, le=30)
    rules: tuple[WebhookRule, ...] = Field(min_length=1)

    @field_validator("secret_env", "prefect_auth_env")
    @classmethod
    def _names_only(cls, value: str | None, info: ValidationInfo) -> str | None:
        return None if value is None else _env_name(value, str(info.field_name))

    @field_validator("extra_secret_envs")
    @classmethod
    def _names_only_all(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_env_name(v, "extra_secret_envs") for v in value)

    @field_validator("prefect_api_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("prefect_api_url must start with http:// or https://")
        return value

    def resolve_secrets(self, environ: Mapping[str, str] | None = None) -> list[str]:
        """The signing secrets, read from the environment (secret: never log them).

        Raises:
            ConfigError: A named variable is unset or empty.
        """
        env = os.environ if environ is None else environ
        secrets = []
        for name in (self.secret_env, *self.extra_secret_envs):
            value = env.get(name, "").strip()
            if not value:
                raise ConfigError(
                    f"webhook: environment variable {name} (signing secret) is not set"
                )
            secrets.append(value)
        return secrets

    def resolve_prefect(self, environ: Mapping[str, str] | None = None) -> tuple[str, str | None]:
        """``(api_url, credential)`` for Prefect's client (the credential is a secret).

        Raises:
            ConfigError: No API URL is configured, or ``prefect_auth_env`` names an unset variable.
        """
        env = os.environ if environ is None else environ
        url = self.prefect_api_url or env.get("PREFECT_API_URL", "").strip()
        if not url:
            raise ConfigError(
                "webhook: no Prefect API; set prefect_api_url or PREFECT_API_URL "
                "(e.g. http://127.0.0.1:4200/api)"
            )
        if self.prefect_auth_env:
            credential = env.get(self.prefect_auth_env, "").strip()
            if not credential:
                raise ConfigError(
                    f"webhook: environment variable {self.prefect_auth_env} "
                    "(Prefect credential) is not set"
                )
            return url, credential
        if key := env.get("PREFECT_API_KEY", "").strip():
            return url, key
        return url, env.get("PREFECT_API_AUTH_STRING", "").strip() or None


def match_rule(event: PagerDutyEvent, config: WebhookConfig) -> WebhookRule | None:
    """The first rule in ``config.rules`` that ``event`` satisfies, or None."""
    return next((rule for rule in config.rules if rule.matches(event)), None)


def freshness_problem(
    event: PagerDutyEvent, now: datetime, max_age_seconds: float
) -> str | None:
    """Why ``event`` is too old or too far in the future to act on, or None when it is fresh."""
    age = (now - event.occurred_at).total_seconds()
    if age > max_age_seconds:
        return (f"stale event: occurred_at is {age:.0f} s old (at most {max_age_seconds:.0f} s "
                "accepted)")
    if -age > MAX_FUTURE_SKEW_SECONDS:
        return (f"event from the future: occurred_at is {-age:.0f} s ahead of this server's clock "
                f"(at most {MAX_FUTURE_SKEW_SECONDS:.0f} s accepted)")
    return None
