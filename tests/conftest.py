"""Test configuration: fixtures live in tests/fixtures/ as plugin modules."""

import os
import tempfile


def _tmpfs_tmpdir(minimum_free: int = 8 << 30) -> str | None:
    """A directory on /dev/shm when it is a tmpfs with ``minimum_free`` bytes free."""
    try:
        with open("/proc/mounts") as mounts:
            tmpfs = any(line.split()[1:3] == ["/dev/shm", "tmpfs"] for line in mounts)
        stat = os.statvfs("/dev/shm")
    except OSError:
        return None
    if not tmpfs or stat.f_bavail * stat.f_frsize < minimum_free:
        return None
    path = f"/dev/shm/restorekit-tests-{os.getuid()}"
    os.makedirs(path, exist_ok=True)
    os.chmod(path, 0o1777)  # PostgreSQL and the app run as other OS users and make files here
    return path


# Every cluster, backup, restore, repository and Prefect database the tests make lives in a
# tmpfs when the machine has one: the suite creates and removes hundreds of thousands of files,
# and on this machine's ext4 17 % of all its CPU went to finding a free inode among the recently
# deleted ones (perf: find_inode_bit, recently_deleted), in tar, cp and PostgreSQL alike. What
# is under test does not change: the same binaries, files, fsyncs and renames. An explicit
# $RESTOREKIT_TEST_TMPDIR wins ("" keeps the system's temporary directory), as does $TMPDIR.
_tmp = os.environ.get("RESTOREKIT_TEST_TMPDIR")
if _tmp is None and "TMPDIR" not in os.environ:
    _tmp = _tmpfs_tmpdir()
if _tmp:
    os.environ["TMPDIR"] = _tmp
    tempfile.tempdir = None  # gettempdir() caches its first answer

# Retries are exercised with the same counts as in production, only with shorter waits: the
# fault tests make permanent failures go through every retry (tasks/_runtime.retry_delays,
# and botocore's own attempts, of which the tests need at least three).
os.environ.setdefault("RESTOREKIT_RETRY_DELAYS", "0.5,1,2")
os.environ.setdefault("AWS_MAX_ATTEMPTS", "3")
# Clusters the tests create have 1 MB WAL segments (production's are 16 MB, RDS's 64 MB): every
# segment archived, compressed, copied and replayed is 16x smaller (the suite took 8 min 0 s with
# 4 MB segments, 6 min 25 s with 1 MB), and any code that assumes 16 MB fails here.
# tests/integration/test_demo.py keeps one installation at PostgreSQL's default.
os.environ.setdefault("RESTOREKIT_WAL_SEGMENT_MB", "1")
# Clusters are copies of one initdb per kind (restorekit/pg/initdb.py): ~0.05 s instead of ~0.5 s
# of CPU for each of the suite's ~100 clusters.
os.environ.setdefault("RESTOREKIT_INITDB_CACHE",
                      os.path.join(tempfile.gettempdir(), f"restorekit-initdb-{os.getuid()}"))


def _one_certificate_bundle(directory: str) -> str:
    """A CA file holding the first certificate of certifi's bundle."""
    import certifi

    with open(certifi.where()) as bundle:
        pem = bundle.read()
    begin = pem.index("-----BEGIN CERTIFICATE-----")
    end = pem.index("-----END CERTIFICATE-----", begin) + len("-----END CERTIFICATE-----")
    path = os.path.join(directory, "restorekit-tests-one-ca.pem")
    with tempfile.NamedTemporaryFile("w", dir=directory, delete=False) as out:
        out.write(pem[begin:end] + "\n")
    os.chmod(out.name, 0o644)  # a public certificate; processes of other OS users read it too
    os.replace(out.name, path)  # every xdist worker writes it; none may read half a file
    return path


# Every Prefect client (the engine makes several per flow run, the tests and the CLI more) builds
# an SSL context from PREFECT_API_SSL_CERT_FILE, else from certifi's whole bundle: 16.9 ms of CPU
# per get_client(), 0.5 ms with one certificate (33 sampled seconds of a run went there in py-spy
# of the workers). The test servers speak plain http on loopback: no certificate is checked.
if "PREFECT_API_SSL_CERT_FILE" not in os.environ:
    os.environ["PREFECT_API_SSL_CERT_FILE"] = _one_certificate_bundle(tempfile.gettempdir())



def _background_threads_draw_from_their_own_generator() -> None:
    """Rebind the ``random`` of the libraries that draw from it in background threads.

    Hypothesis fails a property test when the global ``random`` state moves while it draws an
    example ("Do not use the `random` module inside strategies"), and it cannot tell which thread
    moved it. In an xdist worker that earlier ran a flow, Prefect's GlobalEventLoopThread lives on
    and draws from it: the events client's websocket pings (websockets' ping payload) and the
    API client's retry jitter (prefect.utilities.math). test_dsn_forms failed that way in a
    clean-clone CI run. A private generator is as unpredictable for both uses.
    """
    import random

    from prefect.utilities import math as prefect_math
    from websockets.asyncio import connection as asyncio_connection
    from websockets.sync import connection as sync_connection

    private = random.Random()
    for module in (asyncio_connection, sync_connection, prefect_math):
        if getattr(module, "random", None) is random:
            setattr(module, "random", private)  # noqa: B010 (a module, not a typed object)


_background_threads_draw_from_their_own_generator()

pytest_plugins = [
    "fixtures.pg",
    "fixtures.s3",
    "fixtures.prefect",
    "fixtures.world",
    "fakes.supabase_server",
    "fakes.neon_server",
]
