"""``python -m restorekit.wal``'s arguments: the commands PostgreSQL runs are read without
argparse (it cost every archived segment ~8 ms), and must read exactly as argparse reads them."""

from __future__ import annotations

import shlex

import pytest

from restorekit.wal import _as_written, _parser, archive_command, main, restore_command

SEG = "000000010000000000000001"


def argv_of(command: str) -> list[str]:
    """The arguments after ``-m restorekit.wal`` once PostgreSQL filled in %p and %f."""
    words = shlex.split(command.replace("%p", "pg_wal/" + SEG).replace("%f", SEG)
                        .replace("%%", "%"))
    return words[words.index("restorekit.wal") + 1:]


WRITTEN = [
    argv_of(archive_command("/srv/repo")),
    argv_of(archive_command("/srv/100% repo", compression="zstd:3")),
    argv_of(archive_command("s3://bucket/prefix?endpoint_url=http://127.0.0.1:9000",
                            compression="lz4")),
    argv_of(restore_command("/srv/repo")),
    ["push", "--repo", "", "", ""],
]
NOT_WRITTEN = [
    ["push", "--repo=/srv/repo", "pg_wal/x", SEG],
    ["push", "--compress", "lz4", "--repo", "/srv/repo", "pg_wal/x", SEG],
    ["push", "--repo", "/srv/repo", "-h", SEG],
    ["push", "--repo", "/srv/repo", "--", SEG],
    ["push", "--repo", "/srv/repo", "pg_wal/x", "-1"],
    ["push", "--repo", "-x", "pg_wal/x", SEG],
    ["push", "--repo", "/srv/repo", SEG],
    ["push", "--repo", "/srv/repo", "a", "b", "c"],
    ["get", "--repo", "/srv/repo", "--compress", "lz4", SEG, "dest"],
    ["get", "--repo", "/srv/repo", SEG],
    ["pull", "--repo", "/srv/repo", SEG, "dest"],
    [],
]


@pytest.mark.parametrize("argv", WRITTEN, ids=lambda argv: " ".join(argv))
def test_the_written_commands_read_as_argparse_reads_them(argv: list[str]) -> None:
    fast = _as_written(argv)

    assert fast is not None
    assert vars(fast) == vars(_parser().parse_args(argv))


@pytest.mark.parametrize("argv", NOT_WRITTEN, ids=lambda argv: " ".join(argv) or "nothing")
def test_anything_else_goes_to_argparse(argv: list[str]) -> None:
    assert _as_written(argv) is None


def test_usage_errors_keep_their_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["push", "--repo", "/srv/repo", SEG]) == 2
    assert main(["get", "--repo", "/srv/repo", SEG]) == 126
    assert "usage error" in capsys.readouterr().err
