"""docker-compose.yml, deployments/Dockerfile and deployments/restorekit.compose.toml, checked
against the code.

No Docker engine runs where restorekit is developed, so the compose install is never started by
the tests. These checks read the files instead and hold them to what the code expects: the
archive_command restorekit generates, the repository the worker restores from, the work pool
``restorekit deploy`` creates, the Prefect version the lock pins, and what the image contains.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from collections import Counter
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from sqlalchemy.engine import make_url

from restorekit.config import Settings, load_settings
from restorekit.engines.base import SourceSpec
from restorekit.engines.native import NativeEngine
from restorekit.pg.dsn import parse as parse_dsn
from restorekit.repository import LocalRepository, RepositoryLocation, parse_repository_url

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "deployments" / "Dockerfile"

#: The pool ``restorekit deploy`` registers its deployments on (deployments/deploy.py).
WORK_POOL = "restorekit"

EXPECTED_SERVICES = {"prefect-db", "prefect-server", "minio", "production-db", "worker"}

#: Environment variables that carry credentials; their values must come from ${...}.
SECRET_ENV = re.compile(r"PASSWORD|SECRET|ACCESS_KEY|ROOT_USER|^MINIO_USER$|TOKEN")

#: The only literal credentials allowed in docker-compose.yml: ${VAR:-default} development
#: defaults, each of which the file's header documents.
DEV_DEFAULTS = {"restorekit", "restorekit-secret", "prefect", "production-secret"}

PREFECT_DEFAULT_PORT = 4200
MINIO_DEFAULT_API_PORT = 9000
POSTGRES_PORT = 5432


# -- helpers ---------------------------------------------------------------------------------


_VAR = re.compile(r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
                  r"|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)")


def interpolate(value: str, env: dict[str, str]) -> str:
    """What docker compose makes of ``value`` given the environment ``env``."""

    def sub(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("name") or match.group("bare")
        op, arg = match.group("op"), match.group("arg") or ""
        current = env.get(name)
        if op == ":-":
            return current if current else arg
        if op == "-":
            return arg if current is None else current
        if op in (":?", "?") and not current:
            raise AssertionError(f"${{{name}}} is required: {arg}")
        return current or ""

    return _VAR.sub(sub, value)


def variables(value: str) -> set[str]:
    return {m.group("name") or m.group("bare") for m in _VAR.finditer(value)
            if m.group(0) != "$$"}


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.split("=", 1) for item in env)
        return {k: v for k, v in pairs}
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def argv(value: Any) -> list[str]:
    if value is None:
        return []
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


def depends_on(service: dict[str, Any]) -> dict[str, str]:
    """{service it depends on: condition}."""
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {name: "service_started" for name in deps}
    return {name: (body or {}).get("condition", "service_started") for name, body in deps.items()}


def mounts(service: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(type, source, target) of each volume entry: type is "volume" or "bind"."""
    result = []
    for entry in service.get("volumes") or []:
        if isinstance(entry, dict):
            kind = entry.get("type", "volume")
            result.append((kind, str(entry.get("source", "")), str(entry["target"])))
            continue
        parts = str(entry).split(":")
        if len(parts) == 1:
            result.append(("volume", "", parts[0]))  # anonymous
            continue
        source, target = parts[0], parts[1]
        kind = "bind" if source.startswith((".", "/", "~", "$")) else "volume"
        result.append((kind, source, target))
    return result


def published_ports(service: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(host ip, host port, protocol) of every port published on the host."""
    result = []
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            if entry.get("published") is not None:
                result.append((str(entry.get("host_ip", "")), str(entry["published"]),
                               entry.get("protocol", "tcp")))
            continue
        spec, _, protocol = str(entry).partition("/")
        parts = spec.split(":")
        if len(parts) == 1:
            continue  # container port only: nothing published at a fixed host port
        ip = ":".join(parts[:-2]) if len(parts) > 2 else ""
        result.append((ip, parts[-2], protocol or "tcp"))
    return result


def container_ports(service: dict[str, Any]) -> set[int]:
    ports = set()
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            ports.add(int(entry["target"]))
        else:
            ports.add(int(str(entry).partition("/")[0].split(":")[-1]))
    return ports


def option(args: list[str], *names: str) -> str | None:
    """The value of ``--name value`` / ``--name=value`` in ``args``."""
    for i, arg in enumerate(args):
        for name in names:
            if arg == name and i + 1 < len(args):
                return args[i + 1]
            if arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    return None


def postgres_settings(command: list[str]) -> dict[str, str]:
    """The ``-c name=value`` settings on a postgres command line."""
    settings = {}
    for i, arg in enumerate(command):
        if arg == "-c" and i + 1 < len(command):
            name, _, value = command[i + 1].partition("=")
            settings[name.strip()] = value
        elif arg.startswith("--") and "=" in arg:
            name, _, value = arg[2:].partition("=")
            settings[name.replace("-", "_")] = value
    return settings


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = pending + stripped
        pending = ""
        keyword, _, rest = full.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
    assert not pending, "the Dockerfile ends inside a line continuation"
    return instructions


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return dockerfile_instructions(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def copies(dockerfile: list[tuple[str, str]]) -> dict[str, PurePosixPath]:
    """Each COPY source (relative to the build context) -> where it lands in the image."""
    result: dict[str, PurePosixPath] = {}
    for keyword, args in dockerfile:
        if keyword not in ("COPY", "ADD"):
            continue
        words = [w for w in shlex.split(args) if not w.startswith("--")]
        assert keyword == "COPY", f"use COPY, not ADD: {args}"
        *sources, dest = words
        for source in sources:
            if dest.endswith("/") or len(sources) > 1:
                result[source] = PurePosixPath(dest) / PurePosixPath(source).name
            else:
                result[source] = PurePosixPath(dest)
    return result


@pytest.fixture(scope="module")
def run_commands(dockerfile: list[tuple[str, str]]) -> str:
    return "\n".join(args for keyword, args in dockerfile if keyword == "RUN")


@pytest.fixture(scope="module")
def venv(run_commands: str) -> PurePosixPath:
    """The virtualenv the image installs restorekit into."""
    match = re.search(r"\bpython3(?:\.\d+)?\s+-m\s+venv\s+(\S+)", run_commands)
    assert match, "the Dockerfile creates no virtualenv (python3.x -m venv DIR)"
    return PurePosixPath(match.group(1))


@pytest.fixture(scope="module")
def archive_command(services: dict[str, dict[str, Any]]) -> str:
    settings = postgres_settings(argv(services["production-db"].get("command")))
    assert "archive_command" in settings, "production-db sets no archive_command"
    return settings["archive_command"]


@pytest.fixture(scope="module")
def archive_argv(archive_command: str) -> list[str]:
    # PostgreSQL runs archive_command through /bin/sh after replacing %p, %f and %%.
    return shlex.split(archive_command)


@pytest.fixture(scope="module")
def archive_repo(archive_argv: list[str]) -> RepositoryLocation:
    url = option(archive_argv, "--repo")
    assert url, f"archive_command has no --repo URL: {archive_argv}"
    return parse_repository_url(url)


@pytest.fixture(scope="module")
def bucket_init(services: dict[str, dict[str, Any]]) -> tuple[str, str, str]:
    """(service, mc alias, bucket) of the service that creates the repository bucket."""
    found = []
    for name, service in services.items():
        script = " ".join(argv(service.get("entrypoint")) + argv(service.get("command")))
        for match in re.finditer(r"\bmc\s+mb\s+(?:--\S+\s+)*([\w.-]+)/([\w.-]+)", script):
            found.append((name, match.group(1), match.group(2)))
    assert len(found) == 1, f"expected one service creating a bucket with 'mc mb', found {found}"
    return found[0]


@pytest.fixture(scope="module")
def worker_config_mount(services: dict[str, dict[str, Any]]) -> tuple[Path, str]:
    """(file in the repository, path in the worker) of the mounted restorekit.toml."""
    worker = services["worker"]
    config = environment(worker).get("RESTOREKIT_CONFIG")
    assert config, "the worker sets no RESTOREKIT_CONFIG"
    sources = [source for kind, source, target in mounts(worker)
               if kind == "bind" and target == config]
    assert sources, f"nothing is mounted at the worker's RESTOREKIT_CONFIG {config}"
    return (ROOT / sources[0]).resolve(), config


@pytest.fixture(scope="module")
def settings(worker_config_mount: tuple[Path, str]) -> Settings:
    return load_settings(worker_config_mount[0])


# -- services, dependencies, volumes, ports ----------------------------------------------------


def test_the_expected_services_exist(services: dict[str, dict[str, Any]],
                                     bucket_init: tuple[str, str, str]) -> None:
    missing = EXPECTED_SERVICES - set(services)
    assert not missing, f"docker-compose.yml lacks services {sorted(missing)}"
    name, _, _ = bucket_init
    assert "minio" in depends_on(services[name]), f"{name} must wait for minio"


def test_every_depends_on_names_a_service(services: dict[str, dict[str, Any]]) -> None:
    conditions = {"service_started", "service_healthy", "service_completed_successfully"}
    for name, service in services.items():
        for dependency, condition in depends_on(service).items():
            assert dependency in services, f"{name} depends on unknown service {dependency!r}"
            assert dependency != name, f"{name} depends on itself"
            assert condition in conditions, f"{name}: unknown condition {condition!r}"
            if condition == "service_healthy":
                assert services[dependency].get("healthcheck"), (
                    f"{name} waits for {dependency} to be healthy, but it has no healthcheck")


def test_the_worker_waits_for_what_it_needs(services: dict[str, dict[str, Any]]) -> None:
    deps = depends_on(services["worker"])
    assert {"prefect-server", "production-db"} <= set(deps)
    assert depends_on(services["prefect-server"]).get("prefect-db") == "service_healthy"
    # production-db archives into the bucket from its first WAL switch: the bucket must exist
    assert "minio-bucket" in depends_on(services["production-db"])


def test_every_named_volume_is_declared_and_used(compose: dict[str, Any],
                                                 services: dict[str, dict[str, Any]]) -> None:
    declared = set(compose.get("volumes") or {})
    used = set()
    for name, service in services.items():
        for kind, source, _ in mounts(service):
            if kind == "volume" and source:
                assert source in declared, f"{name} uses undeclared volume {source!r}"
                used.add(source)
            if kind == "bind":
                assert (ROOT / source).exists(), f"{name} bind-mounts missing {source}"
    assert declared - used == set(), f"declared but unused volumes: {sorted(declared - used)}"


def test_no_host_port_is_published_twice(services: dict[str, dict[str, Any]]) -> None:
    published = [(port, proto) for service in services.values()
                 for _, port, proto in published_ports(service)]
    assert published, "nothing is published: the Prefect UI would be unreachable"
    twice = [p for p, n in Counter(published).items() if n > 1]
    assert not twice, f"host ports published more than once: {twice}"


# -- Prefect server ----------------------------------------------------------------------------


def locked_version(package: str) -> str:
    text = (ROOT / "requirements.lock").read_text()
    match = re.search(rf"^{re.escape(package)}==(\S+)", text, re.MULTILINE)
    assert match, f"{package} is not pinned in requirements.lock"
    return match.group(1)


def python_minor() -> str:
    spec = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    match = re.search(r">=\s*(3\.\d+)", spec)
    assert match, spec
    return match.group(1)


def test_prefect_server_image_matches_the_locked_prefect(
        services: dict[str, dict[str, Any]]) -> None:
    image = services["prefect-server"]["image"]
    repo, _, tag = image.partition(":")
    assert repo == "prefecthq/prefect"
    version, _, flavour = tag.partition("-")
    assert version == locked_version("prefect"), (
        f"the server image {image} runs a different Prefect than the worker's "
        f"prefect=={locked_version('prefect')} (requirements.lock)")
    assert flavour == f"python{python_minor()}"


def test_prefect_server_database_is_the_prefect_db_service(
        services: dict[str, dict[str, Any]]) -> None:
    server_env = environment(services["prefect-server"])
    db_env = environment(services["prefect-db"])
    raw = server_env["PREFECT_API_DATABASE_CONNECTION_URL"]
    names = variables(raw) | variables(db_env["POSTGRES_PASSWORD"])
    for env in ({}, {v: f"set-{v}" for v in names}):  # the defaults, then the variables set
        url = make_url(interpolate(raw, env))
        assert url.drivername == "postgresql+asyncpg"
        assert url.host == "prefect-db" and url.host in services
        assert url.port in (None, POSTGRES_PORT)
        assert url.username == db_env["POSTGRES_USER"]
        assert url.database == db_env.get("POSTGRES_DB", db_env["POSTGRES_USER"])
        assert url.password == interpolate(db_env["POSTGRES_PASSWORD"], env), (
            "the Prefect server's database password is not prefect-db's")


def prefect_server_port(services: dict[str, dict[str, Any]]) -> int:
    port = option(argv(services["prefect-server"].get("command")), "--port")
    return int(port) if port else PREFECT_DEFAULT_PORT


def test_prefect_server_listens_where_it_is_published(services: dict[str, dict[str, Any]]) -> None:
    server = services["prefect-server"]
    command = argv(server.get("command"))
    assert command[:3] == ["prefect", "server", "start"]
    assert option(command, "--host") == "0.0.0.0"  # reachable from the worker and the host
    assert prefect_server_port(services) in container_ports(server)


# -- production-db: archive_command ----------------------------------------------------------


def test_archive_command_runs_restorekit_wal_push(archive_argv: list[str],
                                                  archive_command: str) -> None:
    assert archive_argv[1:4] == ["-m", "restorekit.wal", "push"], archive_argv
    assert archive_argv[-2:] == ["%p", "%f"], "push takes the path (%p), then the name (%f)"
    positional = [a for i, a in enumerate(archive_argv[4:], 4)
                  if not a.startswith("--") and archive_argv[i - 1] != "--repo"]
    assert positional == ["%p", "%f"], archive_argv
    # PostgreSQL expands every %x: a stray '%' (e.g. in the URL) must be written %%
    stray = re.sub(r"%[pf%]", "", archive_command)
    assert "%" not in stray, f"unescaped % in archive_command: {archive_command}"


def test_archive_command_interpreter_is_the_images_venv(
        archive_argv: list[str], venv: PurePosixPath, services: dict[str, dict[str, Any]],
        run_commands: str) -> None:
    interpreter = PurePosixPath(archive_argv[0])
    assert interpreter.parent == venv / "bin", (
        f"archive_command runs {interpreter}, but the image's virtualenv is {venv}")
    assert interpreter.name in ("python", "python3", f"python{python_minor()}")
    assert re.search(rf"\bpython{re.escape(python_minor())}\s+-m\s+venv\s+{re.escape(str(venv))}",
                     run_commands), f"{venv} is not built with python{python_minor()}"
    # restorekit must be installed into that venv
    assert re.search(rf"{re.escape(str(venv / 'bin' / 'pip'))}\s+install\b.*\s/src\b",
                     run_commands), f"restorekit is not pip-installed into {venv}"
    build = services["production-db"].get("build")
    assert isinstance(build, dict) and (ROOT / build.get("context", ".") /
                                        build["dockerfile"]).resolve() == DOCKERFILE
    assert services["production-db"].get("user") == "postgres", (
        "PostgreSQL runs archive_command as the server's OS user; the venv must serve it")


def test_archive_repository_is_the_minio_bucket(
        archive_repo: RepositoryLocation, bucket_init: tuple[str, str, str],
        services: dict[str, dict[str, Any]]) -> None:
    assert archive_repo.kind == "s3"
    service, alias, bucket = bucket_init
    assert archive_repo.bucket == bucket, (
        f"production-db archives into bucket {archive_repo.bucket!r}, {service} creates {bucket!r}")
    assert archive_repo.prefix, "give the cluster its own prefix in the bucket"
    assert archive_repo.region
    endpoint = urlsplit(archive_repo.endpoint_url or "")
    assert endpoint.hostname == "minio", f"the S3 endpoint is {archive_repo.endpoint_url}"
    minio_port = option(argv(services["minio"].get("command")), "--address")
    api_port = int(minio_port.rsplit(":", 1)[1]) if minio_port else MINIO_DEFAULT_API_PORT
    assert endpoint.port == api_port
    # the bucket is created on the same MinIO
    script = " ".join(argv(services[service].get("entrypoint")) +
                      argv(services[service].get("command")))
    match = re.search(rf"\bmc\s+alias\s+set\s+{re.escape(alias)}\s+(\S+)", script)
    assert match and urlsplit(match.group(1)).hostname == "minio", script
    assert urlsplit(match.group(1)).port == api_port


def test_wal_settings_are_what_the_native_engine_requires(
        services: dict[str, dict[str, Any]], archive_repo: RepositoryLocation,
        archive_argv: list[str], tmp_path: Path) -> None:
    engine = NativeEngine(
        SourceSpec(dsn="host=production-db user=postgres", bin_dir=tmp_path),
        LocalRepository(tmp_path / "repo"), repo_url=archive_repo.url, work_dir=tmp_path,
        python=archive_argv[0],
    )
    wanted = engine.archive_settings()
    actual = postgres_settings(argv(services["production-db"].get("command")))
    assert actual.get("wal_level") == wanted["wal_level"] == "replica"
    assert actual.get("archive_mode") == wanted["archive_mode"] == "on"
    # the same command restorekit itself would configure, the URL compared in canonical form
    ours, theirs = archive_argv, shlex.split(str(wanted["archive_command"]))
    repo_at = ours.index("--repo") + 1
    assert ours[:repo_at] + ours[repo_at + 1:] == theirs[:repo_at] + theirs[repo_at + 1:]
    assert parse_repository_url(ours[repo_at]).url == parse_repository_url(theirs[repo_at]).url


def test_production_db_has_the_s3_credentials_and_a_superuser_password(
        services: dict[str, dict[str, Any]]) -> None:
    env = environment(services["production-db"])
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(env), (
        "archive_command reaches S3 with the AWS credential chain: give production-db the keys")
    # the postgres image refuses to initialise without one (or trust, which the dsn relies on)
    assert env.get("POSTGRES_PASSWORD") or env.get("POSTGRES_HOST_AUTH_METHOD") == "trust"


def test_the_image_accepts_replication_connections(run_commands: str) -> None:
    # pg_basebackup connects over the replication protocol: "host all all all" does not cover it
    assert re.search(r"/docker-entrypoint-initdb\.d/", run_commands)
    assert re.search(r"host\s+replication\s+all\s+all\b", run_commands), (
        "the production-db image adds no pg_hba rule for replication connections")


# -- the worker ------------------------------------------------------------------------------


def test_worker_config_loads(worker_config_mount: tuple[Path, str]) -> None:
    source, _ = worker_config_mount
    assert source == (ROOT / "deployments" / "restorekit.compose.toml").resolve()
    load_settings(source)  # raises ConfigError naming the problem


def test_worker_config_loads_and_matches_production(
        settings: Settings, archive_repo: RepositoryLocation,
        services: dict[str, dict[str, Any]], worker_config_mount: tuple[Path, str]) -> None:
    source, _ = worker_config_mount
    assert source == (ROOT / "deployments" / "restorekit.compose.toml").resolve()
    assert settings.targets, f"{source} configures no target"
    for name, target in settings.targets.items():
        assert target.repository, f"target {name} has no repository"
        assert parse_repository_url(target.repository).url == archive_repo.url, (
            f"target {name} restores from {target.repository}, production-db archives into "
            f"{archive_repo.url}")
        assert target.engine == "native"  # the engine whose archive_command production-db runs
        assert target.dsn, f"target {name}: expected a dsn"
        params = parse_dsn(target.dsn)
        assert params.get("host") == "production-db" and params["host"] in services
        assert int(params.get("port") or POSTGRES_PORT) == POSTGRES_PORT
        db_env = environment(services["production-db"])
        superuser = db_env.get("POSTGRES_USER", "postgres")
        assert params.get("user") == superuser
        assert params.get("dbname") in (db_env.get("POSTGRES_DB", superuser), "postgres")


def test_worker_state_dir_is_on_a_volume(settings: Settings,
                                         services: dict[str, dict[str, Any]]) -> None:
    targets = {target for kind, _, target in mounts(services["worker"]) if kind == "volume"}
    assert str(settings.state_dir) in targets, (
        f"state_dir {settings.state_dir} is not on a volume: restores would live in the container")


def test_worker_can_log_in_to_production_db(services: dict[str, dict[str, Any]],
                                            settings: Settings) -> None:
    db_env = environment(services["production-db"])
    if db_env.get("POSTGRES_HOST_AUTH_METHOD") == "trust":
        return
    worker_env = environment(services["worker"])
    expected = db_env["POSTGRES_PASSWORD"]
    names = variables(expected) | variables(worker_env.get("PGPASSWORD", ""))
    for env in ({}, {v: f"set-{v}" for v in names}):
        want = interpolate(expected, env)
        for target in settings.targets.values():
            if target.dsn_env:
                got = parse_dsn(interpolate(worker_env[target.dsn_env], env)).get("password")
            else:
                got = interpolate(worker_env.get("PGPASSWORD", ""), env)
            assert got == want, "the worker's password for production-db is not the server's"


def test_worker_runs_a_process_worker_on_the_deploy_pool(
        services: dict[str, dict[str, Any]], venv: PurePosixPath) -> None:
    worker = services["worker"]
    command = argv(worker.get("command"))
    executable = PurePosixPath(command[0])
    assert executable == venv / "bin" / "prefect", (
        f"the worker runs {executable}, not the prefect installed with restorekit in {venv}")
    assert command[1:3] == ["worker", "start"]
    assert option(command, "--pool", "-p") == WORK_POOL
    assert option(command, "--type", "-t") == "process"
    assert worker.get("build") == services["production-db"].get("build"), (
        "the worker must run the image restorekit is installed in")


def test_worker_talks_to_the_prefect_server(services: dict[str, dict[str, Any]]) -> None:
    url = urlsplit(environment(services["worker"])["PREFECT_API_URL"])
    assert url.scheme == "http"
    assert url.hostname == "prefect-server" and url.hostname in services
    assert url.port == prefect_server_port(services)
    assert url.path.rstrip("/") == "/api"


# -- the Dockerfile --------------------------------------------------------------------------


def test_dockerfile_installs_python_and_pgbackrest(run_commands: str,
                                                   dockerfile: list[tuple[str, str]]) -> None:
    base = [args for keyword, args in dockerfile if keyword == "FROM"]
    assert base and base[0].startswith("postgres:"), base
    install = re.search(r"apt-get\s+install\s+([^&;]*)", run_commands)
    assert install, "no apt-get install"
    packages = set(install.group(1).split())
    python = f"python{python_minor()}"
    assert {python, f"{python}-venv", "pgbackrest"} <= packages, packages


def package_dirs() -> list[str]:
    """Top-level packages pyproject.toml ships (tool.setuptools.packages.find.include)."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    names = sorted({pattern.rstrip("*").rstrip(".") for pattern in include})
    return [name for name in names if (ROOT / name / "__init__.py").exists()]


def test_dockerfile_copies_the_code_and_the_lock(copies: dict[str, PurePosixPath],
                                                 run_commands: str) -> None:
    needed = {"pyproject.toml", "requirements.lock", "restorekit", "tasks", "flows"}
    needed |= set(package_dirs())  # `restorekit deploy` in the worker imports deployments
    readme = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"].get("readme")
    if isinstance(readme, str):
        needed.add(readme)  # the build reads it
    missing = needed - set(copies)
    assert not missing, f"the Dockerfile does not COPY {sorted(missing)}"
    project = copies["pyproject.toml"].parent
    for name in needed - {"requirements.lock"}:
        assert copies[name] == project / name, f"{name} lands at {copies[name]}, not in {project}"
    lock = copies["requirements.lock"]
    pinned = rf"pip\s+install\s+(?:--\S+\s+)*-r\s+{re.escape(str(lock))}\b"
    assert re.search(pinned, run_commands), (
        f"the image does not install the pinned dependencies from {lock}")
    # the project itself goes in without re-resolving, so the lock's pins are what runs
    assert re.search(rf"pip\s+install\s+[^&]*--no-deps[^&]*\s{re.escape(str(project))}\b",
                     run_commands)


def test_every_copied_path_exists(copies: dict[str, PurePosixPath],
                                  services: dict[str, dict[str, Any]]) -> None:
    contexts = {(ROOT / s["build"].get("context", ".")).resolve()
                for s in services.values() if isinstance(s.get("build"), dict)}
    assert contexts == {ROOT}, contexts
    missing = [source for source in copies if not (ROOT / source).exists()]
    assert not missing, f"COPY of paths missing from the build context: {missing}"


# -- credentials -----------------------------------------------------------------------------


def header_comment() -> str:
    lines = []
    for line in COMPOSE_FILE.read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line)
    return "\n".join(lines)


def test_credentials_come_from_variables(services: dict[str, dict[str, Any]]) -> None:
    header = header_comment()
    checked = 0
    for name, service in services.items():
        for key, value in environment(service).items():
            if not SECRET_ENV.search(key):
                continue
            checked += 1
            match = re.fullmatch(r"\$\{([A-Z_][A-Z0-9_]*)(?::?-(.*))?\}", value)
            assert match, f"{name}: {key} is a literal, not a ${{VARIABLE}}: {value!r}"
            default = match.group(2)
            if default is not None:
                assert default in DEV_DEFAULTS, f"{name}: {key}: unexpected default {default!r}"
                assert f"{match.group(1)}={default}" in header, (
                    f"{name}: the default {match.group(1)}={default} is not documented in the "
                    "header of docker-compose.yml")
        url = environment(service).get("PREFECT_API_DATABASE_CONNECTION_URL")
        if url:
            password = make_url(url).password
            assert password and re.fullmatch(r"\$\{[^}]+\}", password), (
                f"{name}: the database URL has a literal password")
    assert checked >= 8, "fewer credentials than expected: has the detection broken?"


def test_s3_clients_use_minios_credentials(services: dict[str, dict[str, Any]],
                                           bucket_init: tuple[str, str, str]) -> None:
    minio = environment(services["minio"])
    user, password = minio["MINIO_ROOT_USER"], minio["MINIO_ROOT_PASSWORD"]
    names = variables(user) | variables(password)
    for env in ({}, {v: f"set-{v}" for v in names}):
        for name in ("production-db", "worker"):
            client = environment(services[name])
            assert interpolate(client["AWS_ACCESS_KEY_ID"], env) == interpolate(user, env), name
            assert interpolate(client["AWS_SECRET_ACCESS_KEY"], env) == interpolate(password, env)
    service, alias, _ = bucket_init
    script = " ".join(argv(services[service].get("entrypoint")))
    match = re.search(rf"mc\s+alias\s+set\s+{re.escape(alias)}\s+\S+\s+\"?\$\$?(\w+)\"?\s+"
                      r"\"?\$\$?(\w+)\"?", script)
    assert match, f"{service} does not log in with variables: {script}"
    init_env = environment(services[service])
    for var, expected in zip(match.groups(), (user, password), strict=True):
        assert init_env.get(var) == expected, f"{service}: ${var} is not MinIO's {expected}"


def test_no_secret_in_the_compose_config(worker_config_mount: tuple[Path, str],
                                         settings: Settings,
                                         services: dict[str, dict[str, Any]]) -> None:
    text = worker_config_mount[0].read_text()
    assert not re.search(r"password|secret|aws_|access_key|token", text, re.IGNORECASE), (
        "restorekit.toml names a secret; credentials belong in the environment")
    # the secrets the worker holds (its S3 key, the production password), as whole tokens
    secrets = {interpolate(value, {}) for key, value in environment(services["worker"]).items()
               if re.search(r"PASSWORD|SECRET", key)}
    assert len(secrets) >= 2, "no secrets found in the worker's environment: detection broken?"
    leaked = sorted(s for s in secrets
                    if s and re.search(rf"(?<![\w-]){re.escape(s)}(?![\w-])", text))
    assert not leaked, f"restorekit.compose.toml contains the secret(s) {leaked}"
    for target in settings.targets.values():
        assert target.dsn is None or "password" not in parse_dsn(target.dsn)
