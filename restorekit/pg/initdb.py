"""initdb for the clusters restorekit creates (the demo's, the tests'), optionally from a cached
template.

initdb costs ~0.5 s of CPU (its single-user bootstrap runs the whole system catalogue's SQL);
copying an initialised data directory costs ~0.05 s. With ``$RESTOREKIT_INITDB_CACHE`` set to a
directory, the first cluster of each kind (binaries, OS user, password or trust, WAL segment
size) is initialised there once and every later one is a copy, its superuser password then set
in single-user mode. Copies share the template's system identifier, which restorekit never
reads (two clusters are told apart by their repositories and stanzas, not by it). The tests set
it (tests/conftest.py); production clusters are never created by restorekit.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import secrets
import subprocess
from pathlib import Path

from restorekit.errors import ConfigError, PgToolFailed
from restorekit.pg.tools import PgTool, chown_for, make_dir

SUPERUSER = "postgres"


def segment_size_option() -> list[str]:
    """initdb's ``--wal-segsize`` from ``$RESTOREKIT_WAL_SEGMENT_MB`` (a power of two, 1-1024)."""
    value = os.environ.get("RESTOREKIT_WAL_SEGMENT_MB", "").strip()
    if not value:
        return []
    if not value.isdigit() or int(value) not in {2 ** n for n in range(11)}:
        raise ConfigError(f"RESTOREKIT_WAL_SEGMENT_MB={value!r}: expected a power of two "
                          "from 1 to 1024 (megabytes)")
    return ["--wal-segsize", value]


def initdb(tool: PgTool, data_dir: Path, password: str | None) -> None:
    """Initialise the empty ``data_dir`` (owned by ``tool.os_user``): data checksums, UTF8,
    the C locale; every connection trusted, or with ``password`` scram-sha-256 for all of
    them and that password for ``postgres``."""
    cache = os.environ.get("RESTOREKIT_INITDB_CACHE", "").strip()
    if not cache:
        _run_initdb(tool, data_dir, password)
        return
    template = _template(tool, Path(cache), scram=password is not None)
    tool.run("cp", "-a", f"{template}/.", str(data_dir), timeout=120)
    if password is not None:
        _set_password(tool, data_dir, password)


def _run_initdb(tool: PgTool, data_dir: Path, password: str | None) -> None:
    auth = ["--auth=trust"]
    pwfile = data_dir.parent / f".{data_dir.name}.pw"
    if password is not None:
        # initdb reads the password from a file (never argv); the file goes away at once.
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(password + "\n")
        chown_for(pwfile, tool.os_user)
        auth = ["--auth=scram-sha-256", f"--pwfile={pwfile}"]
    try:
        tool.run("initdb", "-D", str(data_dir), "-U", SUPERUSER, *auth, "--data-checksums",
                 "-E", "UTF8", "--locale=C", "--no-sync", *segment_size_option(), timeout=120)
    finally:
        pwfile.unlink(missing_ok=True)


def _template(tool: PgTool, cache: Path, *, scram: bool) -> Path:
    """The cached data directory for this kind of cluster, initialised on first use (under a
    lock: test workers start side by side)."""
    kind = repr((str(tool.bin_dir), tool.os_user, scram, segment_size_option()))
    template = cache / hashlib.sha256(kind.encode()).hexdigest()[:16]
    if (template / "PG_VERSION").exists():
        return template
    make_dir(cache, tool.os_user, mode=0o755)
    with open(cache / f"{template.name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (template / "PG_VERSION").exists():
            building = make_dir(cache / f"{template.name}.{os.getpid()}", tool.os_user)
            # A password nobody keeps: each copy gets its own (_set_password).
            _run_initdb(tool, building, secrets.token_urlsafe(24) if scram else None)
            building.rename(template)
    return template


def _set_password(tool: PgTool, data_dir: Path, password: str) -> None:
    """``ALTER ROLE postgres PASSWORD`` in single-user mode (the cluster is not running yet);
    the statement goes through stdin, never argv, and never into an error."""
    literal = "'" + password.replace("'", "''") + "'"
    argv = tool.argv("postgres", "--single", "-D", str(data_dir), "-F",
                     "-c", "exit_on_error=true", "-c", "log_statement=none", SUPERUSER)
    result = subprocess.run(argv, input=f"ALTER ROLE {SUPERUSER} PASSWORD {literal};\n",
                            capture_output=True, text=True, timeout=120, check=False)
    if result.returncode != 0:
        raise PgToolFailed(argv, result.returncode,
                           result.stderr.replace(password, "***")[-2000:])
