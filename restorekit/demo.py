"""``restorekit demo``: the embedded default, end to end, on one machine with no cloud account.

1. a "production" cluster with the runbook's sample schema (users, clients, appointments,
   audit_log), archiving its WAL into a local repository;
2. a base backup;
3. more writes, then an accident (users deleted, their clients and appointments cascaded);
4. the restore window, and a point-in-time restore to just before the accident into a NEW
   cluster;
5. verification that the restored cluster has the deleted rows and none written after the point,
   while production is untouched.
"""

from __future__ import annotations

import time
from pathlib import Path

import psycopg
from rich.console import Console
from rich.table import Table

from restorekit import sample
from restorekit.config import load_settings
from restorekit.errors import RestoreKitError
from restorekit.models import RestorePoint
from restorekit.pg.cluster import LocalCluster
from restorekit.pg.tools import default_os_user, make_dir
from restorekit.progress import rich_progress
from restorekit.providers.selfhosted import SelfHostedProvider

CONFIG = """\
# Written by `restorekit demo`. The embedded default: a self-hosted cluster on this machine.
[restorekit]
state_dir = "{state_dir}"

[targets.production]
provider = "selfhosted"
engine = "native"
dsn = "host=127.0.0.1 port={port} user=postgres dbname=app"
repository = "file://{repo}"
tier = "critical"
"""


def _wait_archived(conn: psycopg.Connection, timeout: float = 60) -> None:
    segment = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()
    assert segment is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = conn.execute("SELECT last_archived_wal FROM pg_stat_archiver").fetchone()
        if row and row[0] and row[0] >= segment[0]:
            return
        time.sleep(0.2)
    raise RestoreKitError(f"WAL segment {segment[0]} was not archived within {timeout}s")


def production_cluster(state_dir: Path, console: Console) -> tuple[LocalCluster, Path]:
    """Create (or reuse) the demo production cluster and its config file."""
    os_user = default_os_user()
    make_dir(state_dir, os_user, mode=0o755)
    repo = make_dir(state_dir / "repo", os_user, mode=0o755)
    data_dir = state_dir / "production"
    config = state_dir / "restorekit.toml"
    if data_dir.exists():
        cluster = LocalCluster(data_dir=data_dir, port=0, os_user=os_user)
        settings = cluster.read_settings_file()
        cluster.port = int(str(settings["port"]))
        if not cluster.is_running():
            cluster.start()
        return cluster, config
    console.print(f"[bold]Creating the production cluster[/] in {data_dir}")
    cluster = LocalCluster.create(data_dir)
    config.write_text(CONFIG.format(state_dir=state_dir, port=cluster.port, repo=repo))
    provider = SelfHostedProvider.from_config(
        load_settings(config).target("production"), load_settings(config)
    )
    cluster.write_settings(provider.engine.archive_settings())
    cluster.start()
    with cluster.connect(autocommit=True) as conn:
        conn.execute("CREATE DATABASE app")
    return cluster, config


def run_demo(state_dir: Path, *, scale: float, keep: bool, console: Console, out: Console) -> None:
    cluster, config = production_cluster(state_dir, console)
    settings = load_settings(config)
    provider = SelfHostedProvider.from_config(settings.target("production"), settings)
    app_dsn = cluster.dsn("app")
    with psycopg.connect(app_dsn, autocommit=True) as conn:
        exists = conn.execute("SELECT to_regclass('public.users') IS NOT NULL").fetchone()
        if not (exists and exists[0]):
            console.print(f"[bold]Loading the sample data[/] (scale {scale})")
            sample.create_schema(conn)
            sample.generate(conn, scale=scale)
    console.print("[bold]Taking a base backup[/] into the repository")
    with rich_progress(console) as progress:
        backup = provider.create_backup("demo", progress=progress)
    console.print(f"  backup {backup.backup_id}, {backup.size_bytes / 1e6:.1f} MB, ends at {backup.stop_lsn}")

    with psycopg.connect(app_dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO users (name, email) SELECT 'after backup ' || g, "
            "'after-backup-' || g || '-' || extract(epoch FROM now()) || '@example.com' "
            "FROM generate_series(1, 100) g"
        )
        time.sleep(0.2)
        row = conn.execute("SELECT clock_timestamp()").fetchone()
        assert row is not None
        point_time = row[0]
        time.sleep(0.2)
        victims = [r[0] for r in conn.execute("SELECT id FROM users ORDER BY id LIMIT 25")]
        before = sample.row_counts(conn)
        console.print(f"[bold red]Accident:[/] deleting {len(victims)} users (their clients and "
                      "appointments go with them by ON DELETE CASCADE)")
        conn.execute("DELETE FROM users WHERE id = ANY(%s)", (victims,))
        conn.execute(
            "INSERT INTO users (name, email) SELECT 'after accident ' || g, "
            "'after-accident-' || g || '-' || extract(epoch FROM now()) || '@example.com' "
            "FROM generate_series(1, 10) g"
        )
        after = sample.row_counts(conn)
        _wait_archived(conn)

    window = provider.restore_window()
    console.print(f"[bold]Restore window[/] {window}")
    point = RestorePoint.at(point_time)
    name = f"demo-{int(time.time())}"
    console.print(f"[bold]Point-in-time restore[/] to {point} into a new cluster")
    with rich_progress(console) as progress:
        restored = provider.restore(point, name=name, progress=progress)
    try:
        with psycopg.connect(restored.dsn.get_secret_value()) as conn:
            restored_counts = sample.row_counts(conn)
            back = conn.execute("SELECT count(*) FROM users WHERE id = ANY(%s)", (victims,)).fetchone()
            later = conn.execute(
                "SELECT count(*) FROM users WHERE name LIKE 'after accident %%'"
            ).fetchone()
        assert back is not None and later is not None
        table = Table(title="Row counts")
        table.add_column("table")
        table.add_column("before the accident", justify="right")
        table.add_column("production now", justify="right")
        table.add_column("restored copy", justify="right")
        for key in before:
            table.add_row(key, str(before[key]), str(after[key]), str(restored_counts[key]))
        out.print(table)
        ok = back[0] == len(victims) and later[0] == 0 and restored_counts == before
        verdict = "[bold green]VERIFIED[/]" if ok else "[bold red]NOT VERIFIED[/]"
        out.print(
            f"{verdict}: {back[0]}/{len(victims)} deleted users are in the restored copy, "
            f"{later[0]} rows written after the point are; phases "
            + ", ".join(f"{k} {v:.2f}s" for k, v in restored.phases.items())
        )
        if not ok:
            raise RestoreKitError("the demo restore did not verify")
    finally:
        provider.discard(restored)
        if not keep:
            cluster.stop()
    out.print(f"Config: {config}  (try: restorekit window -c {config} -t production)")
