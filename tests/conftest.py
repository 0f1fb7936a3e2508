"""Test configuration: fixtures live in tests/fixtures/ as plugin modules."""

import os
import tempfile

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

pytest_plugins = [
    "fixtures.pg",
    "fixtures.s3",
    "fixtures.prefect",
    "fixtures.world",
    "fakes.supabase_server",
    "fakes.neon_server",
]
