"""Verification that refuses to pass blind (issue 15): row counts with nothing to compare with
are unverified, production stands in for a missing baseline, NOT VALID foreign keys are
critical. Against real PostgreSQL."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from restorekit import sample
from restorekit.integrity import CheckResult, VerificationReport, capture_baseline, verify
from restorekit.pg.cluster import free_port
from restorekit.pg.dsn import merge

CRITICAL = ("users", "clients", "appointments")


def _create(server: str, name: str, template: str | None = None) -> str:
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}{}").format(
            sql.Identifier(name),
            sql.SQL(" TEMPLATE {}").format(sql.Identifier(template)) if template else sql.SQL("")))
    return psycopg.conninfo.make_conninfo(server, dbname=name)


@pytest.fixture
def pair(pg_server: str) -> Iterator[tuple[str, str]]:
    """(restored, production): two databases with the same sample data (scale 0.01)."""
    restored, production = f"r_{uuid.uuid4().hex[:10]}", f"p_{uuid.uuid4().hex[:10]}"
    restored_dsn = _create(pg_server, restored)
    with psycopg.connect(restored_dsn, autocommit=True) as conn:
        sample.create_schema(conn)
        sample.generate(conn, scale=0.01)
    production_dsn = _create(pg_server, production, template=restored)
    yield restored_dsn, production_dsn
    with psycopg.connect(pg_server, autocommit=True) as conn:
        for name in (restored, production):
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))


def _unreachable(dsn: str) -> str:
    return merge(dsn, port=str(free_port()), connect_timeout="2")


def test_row_counts_without_a_baseline_or_production_are_unverified_not_passed(
    pair: tuple[str, str]
) -> None:
    restored, _ = pair
    report = verify(restored, critical_tables=CRITICAL, amcheck=False)

    counts = report.check("row_counts")
    assert counts.status == "unverified" and counts.unverified
    assert not counts.ok and not counts.critical
    assert counts.detail.startswith("unverified: nothing to compare")
    assert "no baseline, and no production to compare with" in counts.detail
    assert counts.observed["exact"]["public.users"] == 100
    assert counts.observed["compared_with"] is None
    # Nothing failed, but the report does not say it passed.
    assert report.ok and not report.verified
    schema = report.check("schema")
    assert schema.status == "unverified" and not schema.critical
    assert schema.detail.startswith("unverified: no baseline, and no production")
    assert report.unverified == (schema, counts) and counts not in report.warnings
    markdown = report.to_markdown()
    assert markdown.startswith("**Verification NOT VERIFIED**") and "2 unverified" in markdown
    assert "| row_counts | unverified |" in markdown


def test_production_stands_in_for_the_missing_baseline(pair: tuple[str, str]) -> None:
    restored, production = pair
    same = verify(restored, critical_tables=CRITICAL, amcheck=False, reference_dsn=production)
    counts = same.check("row_counts")
    assert counts.ok and counts.critical and counts.status == "pass", counts.detail
    assert counts.observed["compared_with"] == "production"
    assert counts.observed["production"]["public.clients"] == 300
    assert "public.users=100 (production 100)" in counts.detail
    schema = same.check("schema")
    assert schema.ok and schema.critical and schema.detail.startswith("matches production")
    assert same.verified

    # The wrong database (or a restore that lost rows): production has more.
    with psycopg.connect(production, autocommit=True) as conn:
        conn.execute("INSERT INTO users (email, name) SELECT 'extra' || g || '@example.com', "
                     "'extra' FROM generate_series(1, 10) AS g")
    drifted = verify(restored, critical_tables=CRITICAL, amcheck=False,
                     reference_dsn=production, row_count_tolerance=0.05)
    counts = drifted.check("row_counts")
    assert counts.status == "FAIL" and not drifted.ok
    assert counts.observed["drift"]["public.users"] == {
        "production": 110, "observed": 100, "change": round(-10 / 110, 6)}
    assert counts.detail.startswith("public.users: 100 rows, production 110 (-9.1%")

    # Production's schema moved on (or this is another application's database).
    with psycopg.connect(production, autocommit=True) as conn:
        conn.execute("ALTER TABLE users ADD COLUMN nickname text")
    schema = verify(restored, amcheck=False, reference_dsn=production).check("schema")
    assert schema.status == "FAIL" and schema.observed["differences"] == [
        "column public.users.nickname missing (expected: text NULL)"]

    # A baseline, when there is one, is what counts are compared with (not production).
    with psycopg.connect(restored) as conn:
        baseline = capture_baseline(conn, CRITICAL)
    with_baseline = verify(restored, baseline=baseline, amcheck=False, reference_dsn=production)
    assert with_baseline.check("row_counts").observed["compared_with"] == "baseline"
    assert with_baseline.verified


def test_unreachable_production_leaves_row_counts_unverified(pair: tuple[str, str]) -> None:
    restored, production = pair
    report = verify(restored, critical_tables=CRITICAL, amcheck=False,
                    reference_dsn=_unreachable(production))
    counts = report.check("row_counts")
    assert counts.status == "unverified"
    assert "no baseline, and production unreachable (" in counts.detail
    assert report.check("schema").detail.startswith(
        "unverified: no baseline, and production unreachable (")
    assert counts.observed["production_error"]
    assert report.ok and not report.verified


def test_a_table_missing_from_the_baseline_is_unverified(pair: tuple[str, str]) -> None:
    restored, _ = pair
    with psycopg.connect(restored) as conn:
        baseline = capture_baseline(conn, ["users", "clients"])
    report = verify(restored, baseline=baseline, critical_tables=CRITICAL, amcheck=False)
    counts = report.check("row_counts")
    assert counts.status == "unverified"
    assert counts.observed["unverified"] == ["public.appointments"]
    assert "(not in the baseline)" in counts.detail


def test_unverified_survives_the_stored_form_and_old_reports_still_load(
    pair: tuple[str, str]
) -> None:
    restored, _ = pair
    report = verify(restored, critical_tables=CRITICAL, amcheck=False)
    stored = json.loads(json.dumps(report.to_dict()))
    assert stored["ok"] is True and stored["verified"] is False
    again = VerificationReport.from_dict(stored)
    assert again == report and again.check("row_counts").status == "unverified"

    # A report stored before "unverified" existed: no such key anywhere.
    for check in stored["checks"]:
        check.pop("unverified")
    stored.pop("verified")
    old = VerificationReport.from_dict(stored)
    assert old.check("row_counts").status == "warn" and not old.unverified

    with pytest.raises(ValueError, match="neither ok nor critical"):
        CheckResult("row_counts", False, True, unverified=True)


def add_orphan_under_not_valid_fk(dsn: str) -> None:
    """A client whose user does not exist (id 900001), under clients_user_id_fkey re-added
    NOT VALID: the key stands, but the orphan is there."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("ALTER TABLE clients DROP CONSTRAINT clients_user_id_fkey")
        conn.execute("INSERT INTO clients (user_id, name) VALUES (900001, 'orphan')")
        conn.execute("ALTER TABLE clients ADD CONSTRAINT clients_user_id_fkey "
                     "FOREIGN KEY (user_id) REFERENCES users (id) NOT VALID")


def test_orphans_under_a_not_valid_foreign_key_are_a_critical_failure(
    pair: tuple[str, str]
) -> None:
    restored, production = pair
    add_orphan_under_not_valid_fk(restored)
    report = verify(restored, amcheck=False)
    fk = report.check("fk_orphans:clients_user_id_fkey")
    assert fk.status == "FAIL" and fk.critical and fk.observed["validated"] is False
    assert fk.observed["orphans"] == 1 and "NOT VALID" in fk.detail
    assert not report.ok and fk in report.critical_failures

    # Without orphans a NOT VALID key passes, and is still critical.
    with psycopg.connect(restored, autocommit=True) as conn:
        conn.execute("DELETE FROM clients WHERE user_id = 900001")
    clean = verify(restored, amcheck=False, reference_dsn=production)
    fk = clean.check("fk_orphans:clients_user_id_fkey")
    assert fk.ok and fk.critical and fk.observed["validated"] is False


def test_the_incident_report_shows_unverified_row_counts_as_unverified(
    pair: tuple[str, str]
) -> None:
    from restorekit.report import IncidentReport
    from tasks.database import _summary

    restored, _ = pair
    summary = _summary(verify(restored, critical_tables=CRITICAL, amcheck=False))
    assert summary.ok and not summary.verified
    assert [c.name for c in summary.unverified] == ["schema", "row_counts"]
    incident = IncidentReport(scenario="complete-failure", target="production")
    incident.add_verification(summary)
    counts = next(c for c in incident.checks if c.name == "row_counts")
    assert counts.verdict == "unverified" and counts.unverified
    assert "| row_counts | unverified | no | unverified: nothing to compare" in (
        incident.to_markdown())
    # A stored incident report from before the field loads, the row as a warning.
    old = counts.model_dump()
    old.pop("unverified")
    assert type(counts).model_validate(old).verdict == "warn"


def test_unverified_checks_are_not_integrity_findings(pair: tuple[str, str]) -> None:
    from restorekit.scope import integrity_findings

    restored, _ = pair
    add_orphan_under_not_valid_fk(restored)
    report = verify(restored, critical_tables=CRITICAL, amcheck=False)
    assert {c.name for c in report.unverified} == {"schema", "row_counts"}
    findings = integrity_findings(report)
    assert findings.failing_checks == ("fk_orphans:clients_user_id_fkey",)
    assert findings.tables == ("public.clients", "public.users")
