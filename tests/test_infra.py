"""Tests of the integration-test helpers in tests/infra.py and of scripts/healthcheck.py."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import infra
from tests.infra import (
    REPO_ROOT,
    InfraError,
    ManagedProcess,
    MissingBinaryError,
    PostgresServer,
    RedisServer,
    ServiceProcess,
    WorkerProcess,
    find_postgres_bin,
    find_redis_server,
    free_port,
)

HEALTHCHECK = REPO_ROOT / "scripts" / "healthcheck.py"

# A minimal HTTP server: /healthz returns 200, every other path 404.
HTTP_SERVER = textwrap.dedent(
    """
    import sys
    from http.server import BaseHTTPRequestHandler, HTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            status = 200 if self.path == "/healthz" else 404
            self.send_response(status)
            self.end_headers()
            self.wfile.write(b"ok" if status == 200 else b"missing")

        def log_message(self, *args):
            pass

    print("serving on port", sys.argv[1], flush=True)
    HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
    """
)


def _port_accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still "exists" for kill(0); treat it as gone.
    status = Path(f"/proc/{pid}/stat")
    return not (status.exists() and status.read_text().split(") ")[-1].startswith("Z"))


def _run_healthcheck(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(HEALTHCHECK), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        check=False,
    )


# ---------------------------------------------------------------------------
# Binary lookup and ports


def test_free_port_is_bindable() -> None:
    port = free_port()
    assert 1024 <= port <= 65535
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", port))


def test_find_redis_server_rejects_bad_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EMBER_REDIS_SERVER", str(tmp_path / "missing-redis-server"))
    with pytest.raises(MissingBinaryError, match="EMBER_REDIS_SERVER=.*missing-redis-server"):
        find_redis_server()


def test_find_postgres_bin_rejects_bad_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EMBER_PG_BIN", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(infra, "DEBIAN_POSTGRES_ROOT", tmp_path / "none")
    with pytest.raises(MissingBinaryError, match="EMBER_PG_BIN=.*does not contain all of initdb"):
        find_postgres_bin()
    monkeypatch.delenv("EMBER_PG_BIN")
    with pytest.raises(MissingBinaryError, match="apt-get install postgresql"):
        find_postgres_bin()


def test_find_postgres_bin_prefers_newest_debian(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for version in ("9.6", "15", "13"):
        folder = tmp_path / version / "bin"
        folder.mkdir(parents=True)
        for tool in ("initdb", "postgres", "pg_isready", "createdb", "dropdb"):
            (folder / tool).write_text("#!/bin/sh\n")
            (folder / tool).chmod(0o755)
    monkeypatch.delenv("EMBER_PG_BIN", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(infra, "DEBIAN_POSTGRES_ROOT", tmp_path)
    assert find_postgres_bin() == tmp_path / "15" / "bin"


# ---------------------------------------------------------------------------
# ManagedProcess


def test_process_ready_by_http_url() -> None:
    port = free_port()
    process = ManagedProcess(
        [sys.executable, "-c", HTTP_SERVER, str(port)],
        name="http",
        ready_url=f"http://127.0.0.1:{port}/healthz",
        startup_timeout=30,
    )
    with process:
        assert process.running
        assert _port_accepts(port)
        assert "serving on port" in process.log_text()
    assert not process.running
    assert process.returncode == -signal.SIGTERM
    assert not _port_accepts(port)
    assert not process.log_path.exists()  # its temporary folder is removed


def test_process_ready_by_log_line() -> None:
    script = "import time; time.sleep(0.3); print('worker ready', flush=True); time.sleep(60)"
    started = time.monotonic()
    with ManagedProcess([sys.executable, "-c", script], name="log", ready_pattern=r"worker ready") as process:
        assert time.monotonic() - started >= 0.3
        assert process.wait_for_log("ready").group(0) == "ready"
        with pytest.raises(InfraError, match="no line matching 'never'"):
            process.wait_for_log("never", timeout=0.2)


def test_process_env_is_set_and_removed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMBER_TEST_REMOVED", "present")
    script = "import os; print(os.environ.get('EMBER_TEST_SET'), os.environ.get('EMBER_TEST_REMOVED'), flush=True)"
    process = ManagedProcess(
        [sys.executable, "-c", script],
        name="env",
        env={"EMBER_TEST_SET": "value", "EMBER_TEST_REMOVED": None},
        ready_pattern=r"\n",
    )
    with process:
        assert process.wait_for_log(r"value None").group(0) == "value None"


def test_process_early_exit_reports_log() -> None:
    script = "import sys; print('bad configuration: EMBER_X', flush=True); sys.exit(3)"
    process = ManagedProcess([sys.executable, "-c", script], name="early", ready_pattern="never printed")
    with pytest.raises(InfraError, match=r"(?s)exited with status 3 before it was ready.*bad configuration"):
        process.start()
    assert process.returncode == 3
    assert not process.running
    process.close()


def test_process_not_ready_in_time_is_stopped() -> None:
    process = ManagedProcess(
        [sys.executable, "-c", "import time; time.sleep(60)"],
        name="slow",
        ready_pattern="never printed",
        startup_timeout=0.5,
    )
    with pytest.raises(InfraError, match=r"not ready within 0.5 s \(waiting for a log line matching"):
        process.start()
    assert not process.running
    assert process.returncode == -signal.SIGTERM
    process.close()


def test_process_ignoring_sigterm_is_killed() -> None:
    script = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('up', flush=True); time.sleep(60)"
    )
    process = ManagedProcess([sys.executable, "-c", script], name="stubborn", ready_pattern="up", stop_timeout=0.5)
    process.start()
    started = time.monotonic()
    assert process.stop() == -signal.SIGKILL
    assert 0.5 <= time.monotonic() - started < 10
    process.close()


def test_process_kill_ends_whole_group() -> None:
    # The child writes its pid, then both sleep; kill() must end the child too.
    script = textwrap.dedent(
        """
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        print("child", child.pid, flush=True)
        time.sleep(60)
        """
    )
    process = ManagedProcess([sys.executable, "-c", script], name="group", ready_pattern=r"child \d+")
    process.start()
    child_pid = int(process.wait_for_log(r"child (\d+)").group(1))
    assert _process_exists(child_pid)
    assert process.kill() == -signal.SIGKILL
    deadline = time.monotonic() + 5
    while _process_exists(child_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _process_exists(child_pid)
    process.close()


def test_process_restart_appends_log() -> None:
    script = "import os, time; print('pid', os.getpid(), flush=True); time.sleep(60)"
    with ManagedProcess([sys.executable, "-c", script], name="restart", ready_pattern=r"pid \d+") as process:
        first = process.pid
        process.restart()
        assert process.pid != first
        assert process.log_text().count("pid ") == 2
        assert process.log_text(since_start=True).count("pid ") == 1


def test_process_rejects_empty_argv() -> None:
    with pytest.raises(ValueError, match="argv must name a command"):
        ManagedProcess([], name="empty")


# ---------------------------------------------------------------------------
# ServiceProcess and WorkerProcess


def test_service_process_defaults_to_ember_serve() -> None:
    service = ServiceProcess({"EMBER_DATA_DIR": "/tmp/ember-test-data"})
    try:
        assert service.argv[-1] == "serve"
        assert service.env["EMBER_HOST"] == "127.0.0.1"
        assert service.env["EMBER_PORT"] == str(service.port)
        assert service.env["EMBER_DATA_DIR"] == "/tmp/ember-test-data"
        assert service.env["PYTHONPATH"].split(os.pathsep)[0] == str(REPO_ROOT)
        assert service.ready_url == f"http://127.0.0.1:{service.port}/healthz"
        assert service.url("v1/jobs") == f"http://127.0.0.1:{service.port}/v1/jobs"
    finally:
        service.close()


def test_service_process_runs_custom_command() -> None:
    with ServiceProcess(argv=[sys.executable, "-c", HTTP_SERVER, "{port}"], startup_timeout=30) as service:
        assert _port_accepts(service.port)
        assert _run_healthcheck("http", service.url("/healthz")).returncode == 0
        missing = _run_healthcheck("http", service.url("/missing"))
        assert missing.returncode == 1
        assert "returned 404, expected 200" in missing.stderr
    assert not _port_accepts(service.port)


def test_worker_process_defaults_to_ember_worker() -> None:
    worker = WorkerProcess(queues=("cpu", "gpu"))
    try:
        assert worker.argv[-3:] == ["worker", "--queues", "cpu,gpu"]
        assert worker.ready_pattern is not None
        assert worker.ready_pattern.search("[INFO/MainProcess] celery@host-1 ready.")
        assert worker.ready_pattern.search("[INFO/MainProcess] cpu@gpu-node-2 ready.")
        assert not worker.ready_pattern.search("[INFO/MainProcess] mingle: searching for neighbors")
    finally:
        worker.close()
    with pytest.raises(ValueError, match="queues must name at least one queue"):
        WorkerProcess(queues=())


def test_healthcheck_http_unreachable_fails() -> None:
    port = free_port()
    result = _run_healthcheck("http", f"http://127.0.0.1:{port}/healthz", "--timeout", "1")
    assert result.returncode == 1
    assert f"GET http://127.0.0.1:{port}/healthz failed" in result.stderr


def test_healthcheck_worker_needs_broker() -> None:
    result = _run_healthcheck("worker", env={"EMBER_BROKER_URL": ""})
    assert result.returncode == 1
    assert "set EMBER_BROKER_URL" in result.stderr


# ---------------------------------------------------------------------------
# Redis


@pytest.mark.integration
def test_redis_pings_restarts_and_stops(private_redis: RedisServer) -> None:
    redis = pytest.importorskip("redis")
    client = redis.Redis.from_url(private_redis.url, socket_timeout=5)
    try:
        assert client.ping() is True
        client.set("job:1", "queued")
        assert client.get("job:1") == b"queued"

        port, pid = private_redis.port, private_redis.pid
        private_redis.restart()
        assert private_redis.port == port
        assert private_redis.pid != pid
        assert client.ping() is True  # redis-py reconnects
        assert client.get("job:1") is None  # nothing is persisted

        private_redis.kill()
        assert not private_redis.running
        with pytest.raises(redis.ConnectionError):
            client.ping()
        private_redis.start()
        assert client.ping() is True
    finally:
        client.close()

    directory = private_redis.directory
    private_redis.close()
    assert not directory.exists()
    assert not _port_accepts(port)


@pytest.mark.integration
def test_redis_flushall_and_urls(redis_server: RedisServer) -> None:
    redis = pytest.importorskip("redis")
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"
    assert redis_server.url_for(3).endswith("/3")
    with pytest.raises(ValueError, match="between 0 and 15"):
        redis_server.url_for(16)

    client = redis.Redis.from_url(redis_server.url_for(2))
    try:
        client.set("key", "value")
        redis_server.flushall()
        assert client.dbsize() == 0
    finally:
        client.close()


# ---------------------------------------------------------------------------
# PostgreSQL


@pytest.mark.integration
def test_postgres_session_server_selects(postgres_server: PostgresServer) -> None:
    sqlalchemy = pytest.importorskip("sqlalchemy")
    engine = sqlalchemy.create_engine(postgres_server.url)
    try:
        with engine.connect() as connection:
            assert connection.execute(sqlalchemy.text("SELECT 1")).scalar_one() == 1
            row = connection.execute(sqlalchemy.text("SELECT current_user, current_database()")).one()
            assert tuple(row) == ("ember", "ember")
            host = connection.execute(sqlalchemy.text("SELECT inet_server_addr()::text")).scalar_one()
            assert host.startswith("127.0.0.1")
    finally:
        engine.dispose()
    assert postgres_server.dsn == f"postgresql://ember@127.0.0.1:{postgres_server.port}/ember"


@pytest.mark.integration
def test_postgres_database_fixture_is_empty(postgres_database: str, postgres_server: PostgresServer) -> None:
    sqlalchemy = pytest.importorskip("sqlalchemy")
    assert postgres_database != postgres_server.url
    engine = sqlalchemy.create_engine(postgres_database)
    try:
        with engine.begin() as connection:
            tables = connection.execute(
                sqlalchemy.text("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'")
            ).scalar_one()
            assert tables == 0
            connection.execute(sqlalchemy.text("CREATE TABLE scratch (id integer)"))
    finally:
        engine.dispose()


@pytest.mark.integration
def test_postgres_create_and_drop_database(postgres_server: PostgresServer) -> None:
    sqlalchemy = pytest.importorskip("sqlalchemy")
    url = postgres_server.create_database("infra_scratch")
    assert url.endswith("/infra_scratch")
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as connection:
            assert connection.execute(sqlalchemy.text("SELECT current_database()")).scalar_one() == "infra_scratch"
    finally:
        engine.dispose()

    with pytest.raises(InfraError, match="already exists"):
        postgres_server.create_database("infra_scratch")
    postgres_server.drop_database("infra_scratch")
    url = postgres_server.create_database("infra_scratch")  # the name is free again
    postgres_server.drop_database("infra_scratch")

    with pytest.raises(ValueError, match="invalid database name 'Bad-Name'"):
        postgres_server.create_database("Bad-Name")


@pytest.mark.integration
def test_postgres_restart_keeps_data(private_postgres: PostgresServer) -> None:
    sqlalchemy = pytest.importorskip("sqlalchemy")
    server = private_postgres
    engine = sqlalchemy.create_engine(server.url, pool_pre_ping=True)
    try:
        with engine.begin() as connection:
            connection.execute(sqlalchemy.text("CREATE TABLE jobs (id integer PRIMARY KEY, status text)"))
            connection.execute(sqlalchemy.text("INSERT INTO jobs VALUES (1, 'running')"))

        port, pid = server.port, server.pid
        server.restart()
        assert server.port == port
        assert server.pid != pid
        with engine.connect() as connection:
            status = connection.execute(sqlalchemy.text("SELECT status FROM jobs WHERE id = 1")).scalar_one()
            assert status == "running"

        server.kill()  # a crash: recovery replays the write-ahead log on the next start
        server.start()
        with engine.connect() as connection:
            assert connection.execute(sqlalchemy.text("SELECT count(*) FROM jobs")).scalar_one() == 1

        server.stop()
        engine.dispose()
        with pytest.raises(sqlalchemy.exc.OperationalError):
            with engine.connect():
                pass
    finally:
        engine.dispose()

    directory = server.directory
    server.close()
    assert not directory.exists()
    assert not _port_accepts(port)


# ---------------------------------------------------------------------------
# A Celery worker through the helpers, and the worker health check


CELERY_APP = textwrap.dedent(
    """
    import os
    from celery import Celery

    app = Celery("infra_probe", broker=os.environ["PROBE_BROKER"], backend=os.environ["PROBE_BROKER"])
    app.conf.task_default_queue = "cpu"
    app.conf.broker_connection_retry_on_startup = True

    @app.task(name="infra_probe.add")
    def add(left, right):
        return left + right
    """
)


@pytest.mark.integration
def test_celery_worker_runs_task_and_passes_healthcheck(redis_server: RedisServer, tmp_path: Path) -> None:
    celery = pytest.importorskip("celery")
    (tmp_path / "infra_probe.py").write_text(CELERY_APP)
    broker = redis_server.url_for(5)
    worker = WorkerProcess(
        {"PROBE_BROKER": broker, "PYTHONPATH": str(tmp_path)},
        argv=[sys.executable, "-m", "celery", "-A", "infra_probe", "worker", "--queues", "cpu",
              "--pool", "solo", "--loglevel", "INFO", "--hostname", "probe@%h"],
        startup_timeout=60,
    )  # fmt: skip
    with worker:
        app = celery.Celery("infra_probe", broker=broker, backend=broker)
        try:
            result = app.send_task("infra_probe.add", args=(2, 3), queue="cpu")
            assert result.get(timeout=30) == 5
        finally:
            app.close()

        healthy = _run_healthcheck("worker", "--broker", broker, "--timeout", "3")
        assert healthy.returncode == 0, healthy.stderr
        other_host = _run_healthcheck("worker", "--broker", broker, "--host", "elsewhere", "--timeout", "1")
        assert other_host.returncode == 1
        assert "no worker on host 'elsewhere'" in other_host.stderr
        assert "probe@" in other_host.stderr

        assert worker.stop() == 0  # Celery's warm shutdown on SIGTERM exits cleanly
        assert "warm shutdown" in worker.log_text().lower()
