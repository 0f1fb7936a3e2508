"""A production reached over TLS with ``sslmode=verify-full``: its certificate names its host
name, not the address a restored copy listens at.

The copy is a physical copy: it serves the production's own certificate and key. restorekit
reaches it with the source's DSN at the copy's address; with verify-full, libpq checks the
certificate against the host name it is given. The copy is therefore reached as ``host=<the
source's name>`` (what the certificate is checked against) with ``hostaddr=<the copy's
address>`` (where libpq connects), libpq's own way of checking one name at another address.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from restorekit.engines.base import SourceSpec
from restorekit.engines.native import NativeEngine
from restorekit.errors import PostgresError, PostgresUnavailable
from restorekit.models import RestorePoint
from restorekit.pg.cluster import LocalCluster, connect, switch_wal_and_wait_archived
from restorekit.pg.tools import chown_for, default_os_user, make_dir
from restorekit.providers.selfhosted import SelfHostedProvider
from restorekit.repository import open_repository

NAME = "db.restorekit.test"  # resolves nowhere: only hostaddr says where to connect


def _certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A CA, and a server certificate for NAME signed by it: (ca.pem, server.crt, server.key)."""
    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
            "ca.pem", "-days", "2", "-subj", "/CN=restorekit test CA")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out",
            "server.csr", "-subj", f"/CN={NAME}")
    (directory / "san.ext").write_text(f"subjectAltName=DNS:{NAME}\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "san.ext")
    return directory / "ca.pem", directory / "server.crt", directory / "server.key"


def test_a_verify_full_source_restores_to_a_copy_checked_against_its_name(
    pg_base_dir: Path, local_repo_url: str,
    local_cluster_factory: Callable[..., LocalCluster],
) -> None:
    os_user = default_os_user()
    root = make_dir(pg_base_dir / "tls", os_user, mode=0o755)
    certs = make_dir(root / "certs", os_user, mode=0o755)
    ca, crt, key = _certificates(certs)
    source = local_cluster_factory("tls", start=False)
    for path in (crt, key):  # in the data directory, so each copy serves them too
        target = source.data_dir / path.name
        target.write_bytes(path.read_bytes())
        target.chmod(0o600)
        chown_for(target, os_user)
    source.write_settings({"ssl": "on", "ssl_cert_file": "server.crt",
                           "ssl_key_file": "server.key"})
    dsn = (f"host={NAME} hostaddr=127.0.0.1 port={source.port} user=postgres dbname=postgres "
           f"sslmode=verify-full sslrootcert={ca}")
    spec = SourceSpec(dsn=dsn, os_user=os_user, bin_dir=source.bin_dir)
    repo = open_repository(local_repo_url, os_user=os_user)
    engine = NativeEngine(spec, repo, repo_url=local_repo_url, work_dir=root / "work")
    provider = SelfHostedProvider(engine=engine, source=spec, restore_root=root / "restores",
                                  target_name="tls")
    source.write_settings(engine.archive_settings())
    source.start()
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.pgconn.ssl_in_use
        conn.execute("CREATE TABLE items AS SELECT g AS id FROM generate_series(1, 100) g")
    provider.create_backup("tls")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO items SELECT g FROM generate_series(101, 150) g")
    switch_wal_and_wait_archived(dsn)

    restored = provider.restore(RestorePoint.latest(), name="tls-latest")
    try:
        copy = restored.dsn.get_secret_value()
        with psycopg.connect(copy) as conn:
            assert conn.pgconn.ssl_in_use
            assert conn.info.port != source.port  # the copy, not production
            assert conn.execute("SELECT count(*) FROM items").fetchone() == (150,)
        assert f"host={NAME}" in copy and "sslmode=verify-full" in copy
    finally:
        provider.discard(restored)

    # A certificate that does not fit is a configuration error, said at once: it used to count
    # as "not ready yet" (libpq says it without a FATAL), and the restore above polled its copy
    # until the readiness timeout.
    elsewhere = dsn.replace(f"host={NAME}", "host=elsewhere.restorekit.test")
    with pytest.raises(PostgresError, match="does not match host name") as caught:
        connect(elsewhere)
    assert not isinstance(caught.value, PostgresUnavailable)
    assert "TLS settings of the connection string" in str(caught.value)
