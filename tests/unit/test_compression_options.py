"""[backups] compression as each engine reads it (pure: no programs run)."""

from __future__ import annotations

import pytest

from restorekit.config import BackupPolicy
from restorekit.engines.native import basebackup_compress
from restorekit.engines.pgbackrest import compress_options
from restorekit.errors import ConfigError
from restorekit.wal import wal_codec


@pytest.mark.parametrize(("value", "basebackup", "wal", "pgbackrest"), [
    ("none", "none", (None, None), ("none", None)),
    ("lz4", "client-lz4", ("lz4", None), ("lz4", None)),
    ("zstd:3", "client-zstd:3", ("zstd", 3), ("zst", 3)),
    ("server-lz4", "server-lz4", ("lz4", None), ("lz4", None)),
    ("client-gzip:5", "client-gzip:5", ("gzip", 5), ("gz", 5)),
    ("server-none", "none", (None, None), ("none", None)),
])
def test_one_setting_three_readings(value: str, basebackup: str,
                                    wal: tuple[str | None, int | None],
                                    pgbackrest: tuple[str, int | None]) -> None:
    assert BackupPolicy(compression=value).compression == value
    assert basebackup_compress(value) == basebackup
    assert wal_codec(value) == wal
    assert compress_options(value) == pgbackrest


@pytest.mark.parametrize("value", ["brotli", "lz4:", "zstd:100", "middle-lz4", ""])
def test_bad_values_are_refused_everywhere(value: str) -> None:
    with pytest.raises(ValueError, match="compression"):
        BackupPolicy(compression=value)
    with pytest.raises(ConfigError):
        wal_codec(value)
    with pytest.raises(ConfigError):
        compress_options(value)


def test_engines_built_directly_keep_their_old_format() -> None:
    """Compression comes from restorekit.toml ([backups] compression, passed by the provider);
    an engine built without it writes what it wrote before (native: plain; pgBackRest: its
    own default), so existing callers and repositories see no change."""
    from restorekit.engines.native import NativeEngine
    from restorekit.engines.pgbackrest import PgBackRestEngine

    assert (NativeEngine.__init__.__kwdefaults__ or {})["compression"] == "none"
    assert (PgBackRestEngine.__init__.__kwdefaults__ or {})["compression"] is None
    assert (PgBackRestEngine.__init__.__kwdefaults__ or {})["process_max"] == \
        BackupPolicy().process_max
