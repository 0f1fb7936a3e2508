"""What the cloud adapters read from restorekit.toml the same way: a ``[targets.NAME.<kind>]``
section validated by the adapter's settings model (RDS, Neon, Supabase), the NAME of the
environment variable that holds the API token (never the token), and the API root (Neon,
Supabase).

The HTTP side they share (client, retry policy) is in :mod:`restorekit.providers._http`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BaseModel, SecretStr, ValidationError

from restorekit.errors import ConfigError

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

M = TypeVar("M", bound=BaseModel)


def section_name(target: str, kind: str) -> str:
    return f"[targets.{target}.{kind}]"


def _env_var_name(value: str) -> str:
    # The message never repeats the value: a token pasted here by mistake must not reach a log.
    if not _ENV_NAME.match(value):
        raise ValueError(
            "must be the NAME of an environment variable that holds the token, not the token "
            f"itself; got a value of {len(value)} characters"
        )
    return value


def _http_url(value: str) -> str:
    if not value.startswith(("https://", "http://")):
        raise ValueError(f"must be an http(s) URL, got {value!r}")
    return value.rstrip("/")


#: A settings field naming the environment variable that holds a token (never the token).
EnvVarName = Annotated[str, AfterValidator(_env_var_name)]
#: A settings field holding an API root: http(s), without a trailing slash.
ApiRoot = Annotated[str, AfterValidator(_http_url)]


def load_section(model: type[M], raw: Mapping[str, Any] | None, section: str) -> M:
    """``raw`` validated as ``model``; a ConfigError naming ``section`` and each bad field.

    Raises:
        ConfigError: No section, or a field is missing, unknown or malformed (pydantic's
            ``input`` is left out of the message: it may be a pasted secret).
    """
    if raw is None:
        raise ConfigError(f"this target needs a {section} section")
    try:
        return model(**raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'value'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"{section}: {problems}") from None


def token_from_env(name: str, field: str, section: str, what: str) -> SecretStr:
    """The token in the environment variable ``name`` (read now, so a missing one fails before
    any step runs).

    Raises:
        ConfigError: The variable is unset or empty.
    """
    value = os.environ.get(name, "")
    if not value:
        raise ConfigError(
            f"{section}: environment variable {name} ({field}) is not set; put {what} in it"
        )
    return SecretStr(value)
