"""Baselines stored in the repository beside the backups, the local state directory as the
fallback (issue 15): a real baseline captured from PostgreSQL, a real local repository."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest

from restorekit import sample
from restorekit.baseline import baseline_key, load_baseline, local_baseline_path, save_baseline
from restorekit.errors import ConfigError, RepositoryError
from restorekit.integrity import Baseline, capture_baseline
from restorekit.repository import LocalRepository, open_repository


@pytest.fixture
def baseline(pg_dsn: str) -> Baseline:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        sample.create_schema(conn)
        sample.generate(conn, scale=0.01)
        return capture_baseline(conn, ["users", "clients"])


def test_saved_in_the_repository_and_locally_read_from_the_repository_first(
    baseline: Baseline, tmp_path: Path
) -> None:
    repo = open_repository(f"file://{tmp_path / 'repo'}")
    state = tmp_path / "state"
    stored = save_baseline(baseline, target="prod", state_dir=state, repository=repo)
    assert stored == [f"{repo.url} (baselines/prod.json)",
                      str(local_baseline_path(state, "prod"))]
    assert repo.verify(baseline_key("prod")).size > 0  # checksummed like every object

    found = load_baseline(target="prod", state_dir=state, repository=repo)
    assert found is not None and found.baseline == baseline
    assert found.source == f"repository {repo.url} (baselines/prod.json)"

    # Another host: same repository, an empty state directory.
    elsewhere = load_baseline(target="prod", state_dir=tmp_path / "other", repository=repo)
    assert elsewhere is not None and elsewhere.baseline.exact_counts == {
        "public.users": 100, "public.clients": 300}

    # The repository's copy wins over an older local one.
    older = Baseline(baseline.fingerprint, {"public.users": 1}, {}, baseline.captured_at)
    local_baseline_path(state, "prod").write_text(json.dumps(older.to_dict(), default=str))
    again = load_baseline(target="prod", state_dir=state, repository=repo)
    assert again is not None and again.baseline.exact_counts["public.users"] == 100


def test_an_old_install_with_a_local_baseline_only_still_verifies(
    baseline: Baseline, tmp_path: Path
) -> None:
    repo = open_repository(f"file://{tmp_path / 'repo'}")
    state = tmp_path / "state"
    save_baseline(baseline, target="prod", state_dir=state, repository=None)  # as before
    assert not repo.exists(baseline_key("prod"))
    found = load_baseline(target="prod", state_dir=state, repository=repo)
    assert found is not None and found.baseline == baseline
    assert found.source == f"local {local_baseline_path(state, 'prod')}"
    assert load_baseline(target="other", state_dir=state, repository=repo) is None


class _Unreadable(LocalRepository):
    def get_bytes(self, key: str) -> bytes:
        raise RepositoryError(f"{key}: the bucket is unreachable", retryable=True)


def test_an_unreadable_repository_falls_back_to_the_local_copy_else_raises(
    baseline: Baseline, tmp_path: Path
) -> None:
    repo = _Unreadable(tmp_path / "repo")
    state = tmp_path / "state"
    with pytest.raises(RepositoryError, match="unreachable"):
        load_baseline(target="prod", state_dir=state, repository=repo)  # not "no baseline"
    save_baseline(baseline, target="prod", state_dir=state, repository=repo)
    found = load_baseline(target="prod", state_dir=state, repository=repo)
    assert found is not None and found.source.startswith("local ")


def test_a_damaged_stored_baseline_is_a_config_error(baseline: Baseline, tmp_path: Path) -> None:
    repo = open_repository(f"file://{tmp_path / 'repo'}")
    repo.put_bytes(baseline_key("prod"), b"{not json")
    with pytest.raises(ConfigError, match="not JSON"):
        load_baseline(target="prod", state_dir=tmp_path / "state", repository=repo)


@pytest.mark.parametrize("url_fixture", ["local_repo_url", "s3_repo_url"])
def test_a_worker_on_another_host_finds_the_baseline_in_either_backend(
    baseline: Baseline, tmp_path: Path, url_fixture: str, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue(url_fixture)
    save_baseline(baseline, target="prod", state_dir=tmp_path / "capturing-host",
                  repository=open_repository(url))
    other = open_repository(url)  # opened afresh on the worker, nothing local
    found = load_baseline(target="prod", state_dir=tmp_path / "worker", repository=other)
    assert found is not None and found.baseline == baseline
    assert found.source.startswith(f"repository {other.url} ")
    assert [o.key for o in other.list("baselines/")] == ["baselines/prod.json"]
