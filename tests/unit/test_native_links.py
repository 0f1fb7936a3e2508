"""A restored data directory must hold no link: one would be a tablespace of the SOURCE."""

from __future__ import annotations

from pathlib import Path

import pytest

from restorekit.engines.native_restore import refuse_links
from restorekit.errors import RepositoryError


def test_a_link_anywhere_in_the_restored_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "base" / "1").mkdir(parents=True)
    (tmp_path / "base" / "1" / "1234").write_bytes(b"x")
    refuse_links(tmp_path)  # plain files and directories are fine
    (tmp_path / "pg_tblspc").mkdir()
    (tmp_path / "pg_tblspc" / "16385").symlink_to("/var/lib/postgresql/tablespaces/prod")
    with pytest.raises(RepositoryError, match="16385"):
        refuse_links(tmp_path)
