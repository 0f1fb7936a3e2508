"""An AWS Secrets Manager secret as the place where DATABASE_URL lives (provider-apis.md §2).

The secret holds either the raw connection string, or a JSON object of which ``json_key`` is the
connection string (the other keys are kept as they are). Secrets Manager versions every value, so
the previous value never leaves AWS: a :class:`~restorekit.sinks.base.Revision`'s ``ref`` is the
*VersionId* that was ``AWSCURRENT`` before the write, and ``restore`` moves the ``AWSCURRENT``
label back to it with ``update_secret_version_stage`` (Secrets Manager then moves
``AWSPREVIOUS`` to the version the label left). No new version is made, so the restored value is
byte for byte the old one and its VersionId is the old one.

Idempotent retries: ``put_secret_value`` gets a deterministic ``ClientRequestToken`` (a UUID5 of
the secret id, the caller's ``run_key`` when given, and a slow hash of the new value). A retry of
the same write is then a no-op on AWS's side. Secrets Manager ignores a repeated token *without
moving the labels*, so after every put we make sure ``AWSCURRENT`` sits on the version we wrote
(and move it there when it does not: e.g. a run that rolled back and writes the same value again).

Caveat: an old version keeps a label only until the next-but-one write (``AWSPREVIOUS`` moves on);
unlabelled versions are deprecated and eventually deleted (AWS keeps ~100), after which the
revision can no longer be restored (``restore`` says so). Until then ``restore`` finds them with
``ListSecretVersionIds`` (``IncludeDeprecated``; DescribeSecret lists labelled versions only):
that is what rolls back several keys kept in one JSON secret (each key's write is a version).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import uuid
from collections.abc import Iterator
from typing import Any, ClassVar

from pydantic import SecretStr

from restorekit.errors import ConfigError, ProviderError
from restorekit.pg.dsn import redact
from restorekit.sinks.base import Revision, check_new_value, check_read_value, check_revision

log = logging.getLogger(__name__)

CURRENT = "AWSCURRENT"
#: Namespace of the ClientRequestTokens restorekit derives (uuid5).
TOKEN_NAMESPACE = uuid.UUID("8f7d2c1e-5b0a-4c39-9d4e-2a6f1b3c7e90")
_RETRYABLE_CODES = frozenset({
    "ThrottlingException", "Throttling", "TooManyRequestsException", "RequestLimitExceeded",
    "InternalServiceError", "InternalFailure", "ServiceUnavailable", "ServiceUnavailableException",
    "RequestTimeout", "RequestTimeoutException",
})
_AUTH_CODES = frozenset({
    "AccessDeniedException", "UnrecognizedClientException", "InvalidSignatureException",
    "ExpiredTokenException", "InvalidClientTokenId", "IncompleteSignature",
})
_VERSION_ID = re.compile(r"[A-Za-z0-9-]{32,64}")
_PBKDF2_ROUNDS = 100_000


class SecretsManagerStore:
    """A Secrets Manager secret (see :class:`restorekit.sinks.base.ConnectionStore`).

    Args:
        secret_id: The secret's name or ARN. The secret must exist and have a value.
        key: The application's variable name (only shown in ``describe()``; see ``json_key``).
        region: AWS region (else the SDK's default chain).
        endpoint_url: Another endpoint (tests: moto's server).
        json_key: When set, the secret is a JSON object and the connection string is this key.
        run_key: A stable id of the calling run (e.g. the Prefect flow run id): makes the
            ClientRequestToken unique per (run, value). Without it, per value.
        max_attempts: botocore's standard-mode attempts (throttling backs off inside them).
        connect_timeout, read_timeout: Seconds per HTTP call.
        client: A ready boto3 ``secretsmanager`` client (tests); the other AWS options are
            then ignored.
    """

    kind: ClassVar[str] = "aws-secrets-manager"

    def __init__(
        self,
        secret_id: str,
        *,
        key: str = "DATABASE_URL",
        region: str | None = None,
        endpoint_url: str | None = None,
        json_key: str | None = None,
        run_key: str | None = None,
        max_attempts: int = 5,
        connect_timeout: float = 5.0,
        read_timeout: float = 15.0,
        client: Any = None,
    ) -> None:
        if not secret_id or not isinstance(secret_id, str):
            raise ConfigError("aws-secrets-manager: secret_id (name or ARN) is required")
        if json_key is not None and not json_key:
            raise ConfigError("aws-secrets-manager: json_key must not be empty")
        self.secret_id = secret_id
        self.key = key
        self.region = region
        self.json_key = json_key
        self.run_key = run_key
        if client is None:
            from botocore.config import Config
            from botocore.exceptions import BotoCoreError

            from restorekit.clients import boto3_session

            try:
                client = boto3_session().client(
                    "secretsmanager", region_name=region, endpoint_url=endpoint_url,
                    config=Config(retries={"mode": "standard", "max_attempts": max_attempts},
                                  connect_timeout=connect_timeout, read_timeout=read_timeout),
                )
            except (BotoCoreError, ValueError) as exc:  # NoRegionError, a malformed endpoint
                raise ConfigError(f"aws-secrets-manager {secret_id}: {exc}") from exc
        self._client = client

    def __repr__(self) -> str:
        return f"SecretsManagerStore(secret_id={self.secret_id!r}, json_key={self.json_key!r})"

    def describe(self) -> str:
        where = f" in {self.region}" if self.region else ""
        shape = f"JSON key {self.json_key}" if self.json_key else f"raw {self.key}"
        return f"AWS Secrets Manager secret {self.secret_id}{where} ({shape})"

    # -- ConnectionStore ---------------------------------------------------------------------

    def read(self) -> SecretStr:
        _, text = self._current("read")
        return SecretStr(check_read_value(self.describe(), self._value_in(text)))

    def write(self, dsn: SecretStr) -> Revision:
        value = dsn.get_secret_value()
        check_new_value(self.describe(), value)
        previous_id, previous_text = self._current("write")
        new_text = self._compose(previous_text, value)
        revision = Revision(store=self.kind, location=self.describe(), ref=previous_id)
        if new_text == previous_text:
            log.info("%s already holds that value; nothing written", self.describe())
            return revision
        token = self.request_token(new_text)
        with self._aws_errors("write"):
            put = self._client.put_secret_value(SecretId=self.secret_id, SecretString=new_text,
                                                ClientRequestToken=token)
        new_id = str(put["VersionId"])
        try:
            self._make_current(new_id, "write")
            self._check_current(new_id, new_text, "write")
        except (ConfigError, ProviderError) as exc:
            try:
                self._make_current(previous_id, "write")
            except (ConfigError, ProviderError) as put_back:
                raise ProviderError(
                    f"{exc}; moving {CURRENT} back to {previous_id} failed too ({put_back})",
                    provider=self.kind, operation="write",
                ) from exc
            raise ProviderError(f"{exc}; {CURRENT} is back on the previous version "
                                f"{previous_id}", provider=self.kind, operation="write") from exc
        log.info("wrote %s: version %s is %s, previous %s", self.describe(), new_id, CURRENT,
                 previous_id)
        return revision

    def restore(self, revision: Revision) -> None:
        check_revision(revision, kind=self.kind, location=self.describe())
        if revision.ref is None or not _VERSION_ID.fullmatch(revision.ref):
            raise ConfigError(f"{self.describe()}: {revision.ref!r} is not a secret version id")
        self._make_current(revision.ref, "restore")
        current_id, _ = self._current("restore")
        if current_id != revision.ref:
            raise ProviderError(f"{self.describe()}: {CURRENT} is on {current_id} after moving "
                                f"it to {revision.ref}", provider=self.kind, operation="restore")
        log.info("restored %s: version %s is %s again", self.describe(), revision.ref, CURRENT)

    # -- helpers -----------------------------------------------------------------------------

    def request_token(self, secret_string: str) -> str:
        """The ClientRequestToken for writing ``secret_string``: the same for a retry.

        The value enters only through PBKDF2 (the token becomes a VersionId, which people who
        may not read the secret can see).
        """
        digest = hashlib.pbkdf2_hmac("sha256", secret_string.encode(),
                                     f"restorekit:{self.secret_id}".encode(), _PBKDF2_ROUNDS)
        name = "\x00".join((self.secret_id, self.run_key or "", digest.hex()))
        return str(uuid.uuid5(TOKEN_NAMESPACE, name))

    def _current(self, operation: str) -> tuple[str, str]:
        """(VersionId, SecretString) of AWSCURRENT."""
        try:
            with self._aws_errors(operation):
                # VersionStage explicitly: the default is AWSCURRENT on AWS, but moto answers
                # with the last *written* version after a label move.
                got = self._client.get_secret_value(SecretId=self.secret_id,
                                                    VersionStage=CURRENT)
        except _NotFound:
            # The secret is missing, or it exists without a value: describe tells them apart
            # (and raises the missing-secret error itself).
            with self._aws_errors(operation):
                self._client.describe_secret(SecretId=self.secret_id)
            raise ConfigError(f"{self.describe()}: the secret has no {CURRENT} value yet; put "
                              "the application's current connection string in it first") from None
        if "SecretString" not in got:
            raise ConfigError(f"{self.describe()}: the secret holds binary data, not a string")
        return str(got["VersionId"]), str(got["SecretString"])

    def _value_in(self, text: str) -> str:
        if self.json_key is None:
            return text
        value = self._json(text).get(self.json_key)
        if value is None:
            raise ConfigError(f"{self.describe()}: the JSON has no key {self.json_key!r}")
        if not isinstance(value, str):
            raise ConfigError(f"{self.describe()}: {self.json_key!r} is not a string")
        return value

    def _compose(self, previous_text: str, value: str) -> str:
        if self.json_key is None:
            return value
        data = self._json(previous_text)
        data[self.json_key] = value  # every other key, and their order, stays
        return json.dumps(data)

    def _json(self, text: str) -> dict[str, Any]:
        try:
            data = json.loads(text)
        except ValueError:
            data = None  # the decoder's message may quote the secret: say nothing of it
        if not isinstance(data, dict):
            raise ConfigError(f"{self.describe()}: the secret is not a JSON object; unset "
                              "json_key if it holds the raw connection string")
        return data

    def _make_current(self, version_id: str, operation: str) -> None:
        """Move AWSCURRENT onto ``version_id`` from wherever it is (no-op when it is there)."""
        with self._aws_errors(operation):
            described = self._client.describe_secret(SecretId=self.secret_id)
        stages: dict[str, list[str]] = described.get("VersionIdsToStages") or {}
        if version_id not in stages and self._deprecated_exists(version_id, operation):
            # DescribeSecret lists only labelled versions; an unlabelled one (two writes ago,
            # e.g. the first key of a group sharing this secret) stays until AWS deletes it.
            stages[version_id] = []
        if version_id not in stages:
            raise ConfigError(
                f"{self.describe()}: version {version_id} no longer exists (Secrets Manager "
                "deletes versions without a label); its value cannot be made current again"
            )
        holders = [v for v, labels in stages.items() if CURRENT in labels and v != version_id]
        for holder in holders:
            with self._aws_errors(operation):
                self._client.update_secret_version_stage(
                    SecretId=self.secret_id, VersionStage=CURRENT,
                    MoveToVersionId=version_id, RemoveFromVersionId=holder,
                )
        if not holders and CURRENT not in stages[version_id]:
            with self._aws_errors(operation):
                self._client.update_secret_version_stage(
                    SecretId=self.secret_id, VersionStage=CURRENT, MoveToVersionId=version_id,
                )

    def _deprecated_exists(self, version_id: str, operation: str) -> bool:
        """Whether ``version_id`` still exists without a label (ListSecretVersionIds with
        IncludeDeprecated; False when that is not allowed: then it cannot be told)."""
        kwargs: dict[str, Any] = {"SecretId": self.secret_id, "IncludeDeprecated": True,
                                  "MaxResults": 100}
        for _ in range(20):  # AWS keeps about 100 versions: a page or two
            try:
                with self._aws_errors(operation):
                    page = self._client.list_secret_version_ids(**kwargs)
            except ProviderError as exc:
                log.warning("%s: cannot list the secret's versions (%s)", self.describe(), exc)
                return False
            if any(v.get("VersionId") == version_id for v in page.get("Versions") or []):
                return True
            if not page.get("NextToken"):
                return False
            kwargs["NextToken"] = page["NextToken"]
        return False

    def _check_current(self, version_id: str, text: str, operation: str) -> None:
        current_id, current_text = self._current(operation)
        if current_id != version_id or current_text != text:
            raise ProviderError(f"{self.describe()}: the value read back differs from the value "
                                "written", provider=self.kind, operation=operation)

    @contextlib.contextmanager
    def _aws_errors(self, operation: str) -> Iterator[Any]:
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            ConnectionError,
            HTTPClientError,
            NoCredentialsError,
            NoRegionError,
            PartialCredentialsError,
        )

        try:
            yield
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code") or "")
            message = redact(str(error.get("Message") or ""))
            text = f"{self.describe()}: {operation} failed: {code}: {message}"
            if code == "ResourceNotFoundException":
                raise _NotFound(
                    f"{self.describe()}: secret {self.secret_id!r} not found"
                    f"{f' in region {self.region}' if self.region else ''} ({message}); create "
                    "it with the application's current connection string first"
                ) from exc
            if code in _AUTH_CODES:
                text += "; check the AWS credentials and the IAM policy (secretsmanager:" \
                        "GetSecretValue, PutSecretValue, DescribeSecret, UpdateSecretVersionStage)"
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            raise ProviderError(text, provider=self.kind, operation=operation,
                                retryable=code in _RETRYABLE_CODES or (status or 0) >= 500,
                                status_code=status) from exc
        except (NoCredentialsError, PartialCredentialsError, NoRegionError) as exc:
            raise ConfigError(f"{self.describe()}: {exc}") from exc
        except (ConnectionError, HTTPClientError) as exc:  # unreachable, timeouts, resets
            raise ProviderError(f"{self.describe()}: {operation} failed: {exc}",
                                provider=self.kind, operation=operation, retryable=True) from exc
        except BotoCoreError as exc:
            raise ProviderError(f"{self.describe()}: {operation} failed: {exc}",
                                provider=self.kind, operation=operation) from exc


class _NotFound(ConfigError):
    """ResourceNotFoundException: the secret (or, from get_secret_value, its value) is missing."""
