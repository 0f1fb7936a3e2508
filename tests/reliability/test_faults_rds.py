"""RDS API faults injected for real: the accidental-deletion flow against moto's RDS (with a real
PostgreSQL cluster behind every restored instance, fakes.rds_backed) through a proxy that answers
like a throttled or failing RDS, drops connections, loses answers to requests RDS did carry out,
or keeps an instance in ``creating``.

What botocore retries (standard mode, botocore/retries/standard.py; AWS_MAX_ATTEMPTS=3 in the
tests, tests/conftest.py): throttling codes (``Throttling``, ``RequestLimitExceeded``, ...),
HTTP 500/502/503/504, 429, and connection errors, for every operation including the restore.
A restore whose answer was lost is therefore sent again, and RDS answers
``DBInstanceAlreadyExists``: the adapter must then wait for that instance, not fail.

For every fault: production's table checksums before and after (untouched on failure, restored
rows only on success), what is left in RDS (nothing, or a tagged scratch instance that
``list_scratch`` finds and ``discard`` removes), a re-run of the same incident completes, and no
AWS secret key or database password in any error message (a recognisable AWS key is set; the
database password is production's own, which scram-sha-256 makes restorekit need for real).
"""

from __future__ import annotations

import http.client
import re
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from fakes.rds_backed import RdsWorld, rds_world_fixture  # noqa: F401 - provides `rds_world`
from reliability._faults import (
    FaultProxy,
    _Handler,
    assert_no_secret,
    checksums,
    delete_users,
    without_audit,
)

from flows.accidental_deletion import AccidentalDeletionParams, accidental_deletion
from restorekit.errors import OperationTimedOut, ProviderError
from restorekit.models import RestorePoint
from restorekit.providers.rds import RdsProvider
from restorekit.runtime import target_runtime
from tasks.database import restore_name

pytestmark = pytest.mark.slow

AWS_SECRET = "rkCanaryAwsSecretKey0123456789abcdefWXYZ"
RESTORE = "RestoreDBInstanceToPointInTime"
DESCRIBE = "DescribeDBInstances"


# -- a FaultProxy that speaks RDS ------------------------------------------------------------------


@dataclass
class _RdsRule:
    action: str
    ident: str | None  # only requests naming this DB instance
    remaining: int | None  # None: for ever
    status: int
    code: str
    forward: bool  # the request reaches RDS first; only its answer is replaced (lost)
    drop: bool  # no answer at all: the connection is closed
    armed_by: str | None  # only once a request with this action has reached RDS


@dataclass
class RdsFaultProxy(FaultProxy):
    """:class:`FaultProxy` for RDS's query protocol.

    Every RDS call is ``POST /`` with ``Action=...`` in the form body, so faults are chosen by
    action (and instance identifier), answered as RDS answers (``<ErrorResponse>`` with a code),
    and can come after the request reached moto (RDS did it, the answer was lost) or drop the
    connection. :meth:`stuck` rewrites DescribeDBInstances answers: that instance stays in a
    status (without an endpoint, as RDS shows a ``creating`` instance).
    """

    rds_rules: list[_RdsRule] = field(default_factory=list)
    stuck_in: dict[str, str] = field(default_factory=dict)
    forwarded: set[str] = field(default_factory=set)
    injected: list[tuple[str, str]] = field(default_factory=list)  # (action, what)
    rds_lock: threading.Lock = field(default_factory=threading.Lock)

    def fail_action(self, action: str, times: int | None = 1, *, status: int = 500,
                    code: str = "InternalFailure", ident: str | None = None,
                    forward: bool = False, drop: bool = False,
                    armed_by: str | None = None) -> None:
        with self.rds_lock:
            self.rds_rules.append(_RdsRule(action, ident, times, status, code, forward, drop,
                                           armed_by))

    def stuck(self, ident: str, status: str = "creating") -> None:
        self.stuck_in[ident] = status

    def handler_class(self) -> type[_Handler]:
        return _RdsHandler

    def heal(self) -> None:
        with self.rds_lock:
            self.rds_rules.clear()
            self.stuck_in.clear()
            self.forwarded.clear()
            self.injected.clear()
        super().heal()

    def rule_for(self, action: str, idents: set[str]) -> _RdsRule | None:
        with self.rds_lock:
            for rule in self.rds_rules:
                if rule.remaining == 0 or rule.action != action:
                    continue
                if rule.ident is not None and rule.ident not in idents:
                    continue
                if rule.armed_by is not None and rule.armed_by not in self.forwarded:
                    continue
                if rule.remaining is not None:
                    rule.remaining -= 1
                return rule
        return None

    def count(self, action: str | None = None) -> int:
        return sum(1 for a, _ in self.injected if action is None or a == action)


def _rds_error(status: int, code: str) -> bytes:
    kind = "Sender" if status < 500 else "Receiver"
    return (f'<ErrorResponse xmlns="http://rds.amazonaws.com/doc/2014-10-31/"><Error>'
            f"<Type>{kind}</Type><Code>{code}</Code><Message>injected by the test proxy"
            f"</Message></Error><RequestId>{uuid.uuid4()}</RequestId></ErrorResponse>").encode()


_INSTANCE = re.compile(r"<DBInstance>.*?</DBInstance>", re.S)


class _RdsHandler(_Handler):
    owner: RdsFaultProxy  # type: ignore[assignment]

    def _serve(self) -> None:
        owner = self.owner
        body = self._body()
        form = parse_qs(body.decode(errors="replace"))
        action = (form.get("Action") or [""])[0]
        idents = {v for k in ("DBInstanceIdentifier", "TargetDBInstanceIdentifier")
                  for v in form.get(k, [])}
        if owner._server is None:
            self.close_connection = True
            return
        rule = owner.rule_for(action, idents)
        if rule is not None and not rule.forward:
            self._inject(action, rule)
            return
        target = urlsplit(owner.upstream)
        conn = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
        headers = {k: v for k, v in self.headers.items()
                   if k.lower() not in ("connection", "content-length", "transfer-encoding")}
        headers["Content-Length"] = str(len(body))
        try:
            conn.request(self.command, self.path, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
        finally:
            conn.close()
        with owner.rds_lock:
            owner.forwarded.add(action)
        if rule is not None:  # RDS did it; the answer is lost
            self._inject(action, rule)
            return
        if action == DESCRIBE and response.status == 200 and owner.stuck_in:
            data = self._stuck(data.decode()).encode()
        self.send_response(response.status)
        self.send_header("Content-Type", response.getheader("Content-Type") or "text/xml")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _inject(self, action: str, rule: _RdsRule) -> None:
        what = "dropped" if rule.drop else f"{rule.status} {rule.code}"
        with self.owner.rds_lock:
            self.owner.injected.append((action, what + (" after RDS did it" if rule.forward
                                                         else "")))
        if rule.drop:
            self.close_connection = True
            return
        payload = _rds_error(rule.status, rule.code)
        self.send_response(rule.status)
        self.send_header("Content-Type", "text/xml")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _stuck(self, xml: str) -> str:
        def rewrite(match: re.Match[str]) -> str:
            block = match.group(0)
            found = re.search(r"<DBInstanceIdentifier>([^<]+)</DBInstanceIdentifier>", block)
            status = self.owner.stuck_in.get(found.group(1)) if found else None
            if status is None:
                return block
            block = re.sub(r"<DBInstanceStatus>[^<]*</DBInstanceStatus>",
                           f"<DBInstanceStatus>{status}</DBInstanceStatus>", block)
            return re.sub(r"<Endpoint>.*?</Endpoint>", "", block, flags=re.S)

        return _INSTANCE.sub(rewrite, xml)

    do_GET = do_POST = _serve  # the base class bound its own _serve to these names


# -- fixtures and helpers --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def proxy(moto_server: str) -> Iterator[RdsFaultProxy]:
    p = RdsFaultProxy(upstream=moto_server).start()
    yield p
    p.down()


@pytest.fixture
def world(rds_world: RdsWorld, proxy: RdsFaultProxy, tmp_path: Path,  # noqa: F811
          monkeypatch: pytest.MonkeyPatch) -> Iterator[SimpleNamespace]:
    """The RDS world, its RDS API behind the proxy, a recognisable AWS secret key.

    The database password is production's real one: the cluster authenticates every connection
    with scram-sha-256, and restorekit reads its DSN from the variable the config's ``dsn_env``
    names (a password in the file is refused), as the world set it up.
    """
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)  # moto accepts any
    text = rds_world.config.read_text()
    text = text.replace(f'endpoint_url = "{proxy.upstream}"', f'endpoint_url = "{proxy.url}"')
    inst, password = rds_world.inst, rds_world.inst.production.password
    assert proxy.url in text
    assert inst.dsn_env and re.search(rf"(?m)^{re.escape(inst.dsn_line)}$", text)
    assert password  # a DSN without it would be refused
    config = tmp_path / "restorekit-rds-proxied.toml"
    config.write_text(text)
    proxy.heal()
    # As written, URL-quoted, and its random part alone (a key=value DSN escapes its quote).
    db_secrets = (password, quote(password, safe=""), password.split("'")[0])
    yield SimpleNamespace(rds=rds_world, proxy=proxy, config=str(config), db_secrets=db_secrets,
                          provider=target_runtime("production", str(config)).provider)
    proxy.heal()


@dataclass(frozen=True)
class _Incident:
    """One accidental deletion in production, ready for the flow: the checksums before and
    after, the instance id its restore gets, and the flow's parameters."""

    intact: dict[str, str]
    broken: dict[str, str]
    ident: str
    params: AccidentalDeletionParams


def _incident(world: SimpleNamespace, incident: str, *, deleted: int) -> _Incident:
    """Delete ``deleted`` users in production (and archive the WAL) as incident ``incident``."""
    rds = world.rds
    intact = checksums(rds.app_dsn)
    _, since = delete_users(rds.app_dsn, deleted)
    rds.wait_archived()
    params = AccidentalDeletionParams(target="production", config=world.config,
                                      require_approval=False, incident_id=incident,
                                      deleted_since=since)
    ident = world.provider.instance_id_for(restore_name("ad", incident))
    return _Incident(intact, checksums(rds.app_dsn), ident, params)


def _assert_back_and_clean(world: SimpleNamespace, case: _Incident) -> None:
    """The deleted rows are back (the audit log aside) and no scratch restore is left."""
    rds = world.rds
    assert without_audit(checksums(rds.app_dsn)) == without_audit(case.intact)
    assert rds.scratch_instances() == [] and world.provider.list_scratch() == []


def _messages(exc: BaseException) -> str:
    """Every message in the exception chain (the botocore error under ours too)."""
    seen: list[str] = []
    while exc is not None and len(seen) < 10:
        seen.append(f"{type(exc).__name__}: {exc}")
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return "\n".join(seen)


def _no_secrets(world: SimpleNamespace, exc: BaseException) -> None:
    assert_no_secret(_messages(exc), AWS_SECRET, *world.db_secrets)


# -- the tests -------------------------------------------------------------------------------------


def test_throttling_5xx_dropped_connections_and_a_lost_restore_answer_are_retried(
    prefect_server: str, world: SimpleNamespace,
) -> None:
    """RestoreDBInstanceToPointInTime: Throttling (400), then RDS restores but the connection
    drops before the answer, so botocore's third attempt gets DBInstanceAlreadyExists and the
    adapter waits for that instance. DescribeDBInstances of it: a 503 and a dropped connection
    in one call. Within AWS_MAX_ATTEMPTS=3 every call succeeds: so does the flow."""
    proxy = world.proxy
    case = _incident(world, "rds-flaky", deleted=2)
    ident = case.ident
    proxy.fail_action(RESTORE, 1, status=400, code="Throttling")
    proxy.fail_action(RESTORE, 1, drop=True, forward=True)
    proxy.fail_action(DESCRIBE, 1, status=503, code="ServiceUnavailable", ident=ident,
                      armed_by=RESTORE)
    proxy.fail_action(DESCRIBE, 1, drop=True, ident=ident, armed_by=RESTORE)

    report = accidental_deletion(case.params)

    assert report.outcome == "succeeded", report.error
    assert proxy.injected == [
        (RESTORE, "400 Throttling"), (RESTORE, "dropped after RDS did it"),
        (DESCRIBE, "503 ServiceUnavailable"), (DESCRIBE, "dropped")]
    # One instance was restored (the lost answer was not a second restore), and discarded.
    _assert_back_and_clean(world, case)


def test_permanent_5xx_on_the_restore_fails_clearly_leaves_production_and_a_rerun_completes(
    prefect_server: str, world: SimpleNamespace,
) -> None:
    rds, proxy = world.rds, world.proxy
    case = _incident(world, "rds-500", deleted=2)
    ident, params = case.ident, case.params

    # 1. RDS answers 500 to every restore request without doing it: nothing was created.
    proxy.fail_action(RESTORE, None, status=500, code="InternalFailure")
    with pytest.raises(ProviderError) as failed:
        accidental_deletion(params)

    error, message = failed.value, str(failed.value)
    assert proxy.count(RESTORE) == 3  # AWS_MAX_ATTEMPTS: botocore tried three times
    assert error.provider == "rds" and error.status_code == 500 and error.code == "InternalFailure"
    assert error.operation == "restore_db_instance_to_point_in_time" and error.is_retryable
    assert "InternalFailure" in message and "after 3 attempts" in message  # what happened
    assert f"no instance {ident} was created" in message  # the state
    assert f"the source {rds.source.instance_id} was not changed" in message
    assert "Next: re-run with the same incident id" in message  # what to do
    _no_secrets(world, error)
    assert checksums(rds.app_dsn) == case.broken  # production untouched
    assert rds.scratch_instances() == []

    # 2. RDS does the restore but every answer is a 500 (and the retries' DBInstanceAlreadyExists
    # too): the instance exists, and the message says so and how it is removed or reused.
    proxy.heal()
    proxy.fail_action(RESTORE, None, status=500, code="InternalFailure", forward=True)
    with pytest.raises(ProviderError) as failed:
        accidental_deletion(params)

    message = str(failed.value)
    assert proxy.count(RESTORE) == 3
    assert f"RDS did create instance {ident}" in message and "restorekit:scratch" in message
    assert "re-run with the same restore name (incident id) reuses it" in message
    assert "restorekit cleanup --target production" in message
    _no_secrets(world, failed.value)
    assert checksums(rds.app_dsn) == case.broken
    assert rds.scratch_instances() == [ident]  # tagged: cleanup finds it
    (left,) = world.provider.list_scratch()
    assert left.handle == ident
    # ... and would keep it only if the application pointed at it (cleanup asks `reaches`).
    (instance,) = rds.rds.describe_db_instances(DBInstanceIdentifier=ident)["DBInstances"]
    endpoint = instance["Endpoint"]
    assert world.provider.reaches(left, f"host={endpoint['Address']} port={endpoint['Port']}")
    assert not world.provider.reaches(left, rds.app_dsn)

    # 3. RDS recovers: the same incident reuses that instance and completes.
    proxy.heal()
    report = accidental_deletion(params)

    assert report.outcome == "succeeded", report.error
    assert RESTORE not in proxy.forwarded  # reused, not restored again
    _assert_back_and_clean(world, case)


def test_an_instance_that_never_becomes_available_times_out_naming_it_and_is_discarded(
    prefect_server: str, world: SimpleNamespace,
) -> None:
    rds, proxy = world.rds, world.proxy
    case = _incident(world, "rds-stuck", deleted=1)
    ident = case.ident
    proxy.stuck(ident, "creating")

    started = time.monotonic()
    with pytest.raises(OperationTimedOut) as failed:
        accidental_deletion(case.params)

    message = str(failed.value)
    assert time.monotonic() - started < 30
    assert f"RDS instance {ident} was not available after 5 checks" in message
    assert "last status: creating" in message and "may still be running" in message
    assert "re-run with the same incident id to resume waiting" in message
    assert "restorekit cleanup --target production" in message
    assert not failed.value.is_retryable  # never retried blindly: it may still finish
    _no_secrets(world, failed.value)
    assert checksums(rds.app_dsn) == case.broken

    # Still stuck: cleanup (list the scratch restores, discard each) removes it anyway.
    (left,) = world.provider.list_scratch()
    assert left.handle == ident and rds.scratch_instances() == [ident]
    assert not world.provider.reaches(left, rds.app_dsn)  # no endpoint yet: nothing uses it
    world.provider.discard(left)
    assert rds.scratch_instances() == [] and world.provider.list_scratch() == []
    assert ident not in {i["DBInstanceIdentifier"] for i in rds.instances()}


def test_the_poll_loop_rides_out_a_describe_outage_longer_than_botocores_retries(
    world: SimpleNamespace,
) -> None:
    """Three 500s in a row exhaust one DescribeDBInstances call (AWS_MAX_ATTEMPTS=3): the wait
    counts it as "not yet" and polls again instead of failing the restore."""
    rds, proxy = world.rds, world.proxy
    runtime = target_runtime("production", world.config)
    provider = RdsProvider(world.provider.settings, source_dsn=runtime.config.resolve_dsn(),
                           target_name="production")
    provider._sleep = lambda _: None  # noqa: SLF001 - wait_delay_seconds is 0 anyway
    ident = provider.instance_id_for("outage")
    proxy.fail_action(DESCRIBE, 3, status=500, code="InternalFailure", ident=ident,
                      armed_by=RESTORE)
    seen: list[int] = []

    restored = provider.restore(RestorePoint.latest(), name="outage",
                                progress=lambda phase, done, total: seen.append(done))

    assert restored.handle == ident and proxy.count(DESCRIBE) == 3
    assert seen == [1, 2]  # the first check failed (transiently), the second found it
    provider.discard(restored)
    assert rds.scratch_instances() == []
