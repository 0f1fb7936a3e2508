"""Who may connect to a restored copy: a deliberate choice, stated in the report."""

from __future__ import annotations

from pathlib import Path

from restorekit.engines.recovery import STRICT_HBA, settle_access_rules

SOURCE_HBA = """# TYPE DATABASE USER ADDRESS METHOD
local   all  all                 scram-sha-256
host    all  all  127.0.0.1/32   scram-sha-256
host    app  app  10.0.0.0/8     scram-sha-256
"""


def test_the_copy_keeps_the_source_rules_unchanged(tmp_path: Path) -> None:
    (tmp_path / "pg_hba.conf").write_text(SOURCE_HBA)
    (tmp_path / "pg_ident.conf").write_text("# none\n")
    (tmp_path / "postgresql.conf").write_text("port = 5432\n#hba_file = '/etc/x'\n")

    settings, line = settle_access_rules(tmp_path, None, listen_addresses="10.0.0.5")

    assert (tmp_path / "pg_hba.conf").read_text() == SOURCE_HBA
    assert settings == {}  # the data directory's own files: nothing to pin
    assert "source's own pg_hba.conf" in line and "3 rule(s)" in line and "10.0.0.5" in line
    assert "trust" not in line


def test_a_trusting_source_is_named_in_the_report(tmp_path: Path) -> None:
    (tmp_path / "pg_hba.conf").write_text("host all all 127.0.0.1/32 trust\n")
    _, line = settle_access_rules(tmp_path, None, listen_addresses="127.0.0.1")
    assert "1 of them 'trust' as on the source" in line


def test_files_kept_elsewhere_get_a_strict_copy_pinned_to_the_data_directory(
        tmp_path: Path) -> None:
    # Debian's layout: the source reads /etc/postgresql/15/main/pg_hba.conf, not in the backup.
    (tmp_path / "postgresql.conf").write_text(
        "hba_file = '/etc/postgresql/15/main/pg_hba.conf'\n"
        "ident_file = '/etc/postgresql/15/main/pg_ident.conf'\n")

    settings, line = settle_access_rules(tmp_path, None, listen_addresses="127.0.0.1")

    assert settings == {"hba_file": str(tmp_path / "pg_hba.conf"),
                        "ident_file": str(tmp_path / "pg_ident.conf")}
    assert (tmp_path / "pg_hba.conf").read_text() == STRICT_HBA
    rules = [r.split() for r in STRICT_HBA.splitlines() if r and not r.startswith("#")]
    assert rules and all(rule[-1] == "scram-sha-256" for rule in rules)
    assert "strict pg_hba.conf written by restorekit" in line
