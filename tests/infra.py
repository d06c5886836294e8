"""Real servers and Ember processes for integration tests.

Import from here as ``from tests.infra import RedisServer, PostgresServer,
ServiceProcess, WorkerProcess``. Everything listens on 127.0.0.1 only, on a
free port, and keeps its files in a fresh temporary folder that is removed
when the helper is closed.

- :class:`RedisServer`: ``redis-server`` without persistence.
- :class:`PostgresServer`: a throw-away PostgreSQL cluster with a trusted
  user ``ember`` and a database ``ember``.
- :class:`ManagedProcess`: any command in its own process group, with its
  output in a log file, a readiness check, and SIGTERM-then-SIGKILL stopping.
- :class:`ServiceProcess` and :class:`WorkerProcess`: ``ember serve`` and
  ``ember worker`` as subprocesses.

PostgreSQL's ``initdb`` and ``postgres`` reject the root user. When the tests
run as root (as in CI), the cluster runs as an unprivileged account instead:
``$EMBER_TEST_DB_USER`` if set, else the first of ``ember-ci``, ``postgres``
and ``nobody`` that exists.

Redis is ``$EMBER_REDIS_SERVER`` or ``redis-server`` on ``PATH``. PostgreSQL's
programs come from ``$EMBER_PG_BIN`` (a folder), else the folder of ``initdb``
on ``PATH``, else the newest ``/usr/lib/postgresql/*/bin``.
"""

from __future__ import annotations

import logging
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
LOOPBACK = "127.0.0.1"

#: Where Debian installs each PostgreSQL major version, as VERSION/bin.
DEBIAN_POSTGRES_ROOT = Path("/usr/lib/postgresql")

#: Accounts tried, in order, to run PostgreSQL when the tests run as root.
UNPRIVILEGED_USERS = ("ember-ci", "postgres", "nobody")

_DATABASE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_PORT_IN_USE = re.compile(r"address already in use", re.IGNORECASE)
_LOG_TAIL_CHARS = 4000
_POLL_INTERVAL_S = 0.05


class InfraError(RuntimeError):
    """A test server or process failed to start, respond or stop."""


class MissingBinaryError(InfraError):
    """A server binary needed by a test helper is not installed."""


# ---------------------------------------------------------------------------
# Small utilities


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago.

    Another process may take the port before the caller binds it, so the
    server helpers retry with a new port when the bind fails.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def find_redis_server() -> Path:
    """Return the path of ``redis-server``.

    Raises:
        MissingBinaryError: if ``$EMBER_REDIS_SERVER`` is unset and
            ``redis-server`` is not on ``PATH``.
    """
    configured = os.environ.get("EMBER_REDIS_SERVER")
    if configured:
        path = Path(configured)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise MissingBinaryError(f"EMBER_REDIS_SERVER={configured} is not an executable file")
        return path
    found = shutil.which("redis-server")
    if found is None:
        raise MissingBinaryError(
            "redis-server not found on PATH; install it (Debian: apt-get install redis-server) "
            "or set EMBER_REDIS_SERVER to its path"
        )
    return Path(found)


def find_postgres_bin() -> Path:
    """Return the folder that contains ``initdb``, ``postgres`` and ``pg_isready``.

    Raises:
        MissingBinaryError: if no such folder is found.
    """
    needed = ("initdb", "postgres", "pg_isready", "createdb", "dropdb")
    candidates: list[Path] = []
    configured = os.environ.get("EMBER_PG_BIN")
    if configured:
        candidates.append(Path(configured))
    on_path = shutil.which("initdb")
    if on_path is not None:
        # Debian links only some tools into PATH, but their real folder contains them all.
        candidates.append(Path(on_path).resolve().parent)
    debian = sorted(
        DEBIAN_POSTGRES_ROOT.glob("*/bin"),
        key=lambda path: _version_key(path.parent.name),
        reverse=True,
    )
    candidates.extend(debian)

    for folder in candidates:
        if all(os.access(folder / name, os.X_OK) for name in needed):
            return folder
    if configured:
        raise MissingBinaryError(f"EMBER_PG_BIN={configured} does not contain all of {', '.join(needed)}")
    raise MissingBinaryError(
        "PostgreSQL server binaries (initdb, postgres) not found on PATH or in /usr/lib/postgresql/*/bin; "
        "install them (Debian: apt-get install postgresql) or set EMBER_PG_BIN to their folder"
    )


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", name)) or (0,)


def unprivileged_account() -> pwd.struct_passwd | None:
    """Return the account that runs PostgreSQL, or ``None`` when not root.

    Raises:
        InfraError: if running as root and none of the candidate accounts
            exists.
    """
    if os.geteuid() != 0:
        return None
    configured = os.environ.get("EMBER_TEST_DB_USER")
    names = (configured,) if configured else UNPRIVILEGED_USERS
    for name in names:
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise InfraError(
        f"PostgreSQL cannot run as root and none of the accounts {', '.join(names)} exists; "
        "create one (useradd --system ember-ci) or set EMBER_TEST_DB_USER"
    )


def _tail(text: str) -> str:
    if len(text) <= _LOG_TAIL_CHARS:
        return text
    return "..." + text[-_LOG_TAIL_CHARS:]


def _redis_command(port: int, *parts: str, timeout: float = 1.0) -> bytes:
    """Send one command to Redis over RESP and return the raw first reply line."""
    request = f"*{len(parts)}\r\n".encode()
    for part in parts:
        data = part.encode()
        request += b"$%d\r\n%s\r\n" % (len(data), data)
    with socket.create_connection((LOOPBACK, port), timeout=timeout) as sock:
        sock.sendall(request)
        reply = b""
        while not reply.endswith(b"\r\n"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
    return reply.strip()


def _http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


# ---------------------------------------------------------------------------
# Processes


class ManagedProcess:
    """One command run in its own process group, with its output in a log file.

    The process is ready when ``ready_check`` returns true, ``ready_url``
    returns status 200 and a line of its output matches ``ready_pattern``
    (each check only where given). With no check it is ready once started.

    Args:
        argv: the command and its arguments.
        name: a short name used in the log file name and in errors.
        env: variables set on top of ``os.environ``; a value of ``None``
            removes the variable.
        cwd: the working folder (default: the repository root).
        ready_check: a function that returns true once the process is ready.
        ready_url: an HTTP URL that returns 200 once the process is ready.
        ready_pattern: a regular expression searched in the output written
            since the last start.
        startup_timeout: seconds to wait for readiness (default 60 s).
        stop_timeout: seconds to wait after ``stop_signal`` before SIGKILL
            (default 20 s).
        stop_signal: the signal sent to the main process by :meth:`stop`
            (default SIGTERM). Only the main process gets it, so a Celery or
            PostgreSQL parent can shut its children down in order.
        log_path: the log file (default: ``NAME.log`` in a new temporary
            folder). Output of every start is appended to it.
        user: an account to run the command as (needs root).

    Raises:
        InfraError: from :meth:`start` if the process exits early or is not
            ready within ``startup_timeout``.
    """

    def __init__(
        self,
        argv: Sequence[str | os.PathLike[str]],
        *,
        name: str,
        env: Mapping[str, str | None] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        ready_check: Callable[[], bool] | None = None,
        ready_url: str | None = None,
        ready_pattern: str | None = None,
        startup_timeout: float = 60.0,
        stop_timeout: float = 20.0,
        stop_signal: signal.Signals = signal.SIGTERM,
        log_path: str | os.PathLike[str] | None = None,
        user: pwd.struct_passwd | None = None,
    ) -> None:
        if not argv:
            raise ValueError("argv must name a command; got an empty sequence")
        self.argv = [os.fspath(part) for part in argv]
        self.name = name
        self.env = dict(env or {})
        self.cwd = Path(cwd) if cwd is not None else REPO_ROOT
        self.ready_check = ready_check
        self.ready_url = ready_url
        self.ready_pattern = re.compile(ready_pattern) if ready_pattern else None
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.stop_signal = stop_signal
        self.user = user

        self._own_dir: Path | None = None
        if log_path is None:
            self._own_dir = Path(tempfile.mkdtemp(prefix=f"ember-{name}-"))
            log_path = self._own_dir / f"{name}.log"
        self.log_path = Path(log_path)
        self._process: subprocess.Popen[bytes] | None = None
        self._log_offset = 0
        self.returncode: int | None = None

    # -- state ---------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """The process id of the running command, or ``None``."""
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        """Whether the command has been started and has not exited."""
        return self._process is not None and self._process.poll() is None

    def log_text(self, *, since_start: bool = False) -> str:
        """Return the log, or only what was written since the last start."""
        if not self.log_path.exists():
            return ""
        with self.log_path.open("rb") as handle:
            if since_start:
                handle.seek(self._log_offset)
            return handle.read().decode("utf-8", errors="replace")

    # -- start ---------------------------------------------------------------

    def start(self) -> Self:
        """Start the command and wait until it is ready.

        Raises:
            InfraError: if it is already running, exits before it is ready,
                or is not ready within ``startup_timeout`` (it is then
                stopped).
        """
        if self.running:
            raise InfraError(f"{self.name} is already running (pid {self.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self.returncode = None

        environment = dict(os.environ)
        for key, value in self.env.items():
            if value is None:
                environment.pop(key, None)
            else:
                environment[key] = value

        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=environment,
                cwd=self.cwd,
                start_new_session=True,
                user=self.user.pw_uid if self.user else None,
                group=self.user.pw_gid if self.user else None,
                extra_groups=[] if self.user else None,
            )
        logger.info("started %s (pid %d): %s", self.name, self._process.pid, " ".join(self.argv))

        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _is_ready(self) -> bool:
        if self.ready_check is not None and not self.ready_check():
            return False
        if self.ready_url is not None and not _http_ok(self.ready_url):
            return False
        if self.ready_pattern is not None and not self.ready_pattern.search(self.log_text(since_start=True)):
            return False
        return True

    def _wait_ready(self) -> None:
        assert self._process is not None  # set by start()
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if self._is_ready():
                return
            code = self._process.poll()
            if code is not None:
                self.returncode = code
                raise InfraError(
                    f"{self.name} exited with status {code} before it was ready; "
                    f"command: {' '.join(self.argv)}\nlog tail:\n{_tail(self.log_text(since_start=True))}"
                )
            if time.monotonic() > deadline:
                raise InfraError(
                    f"{self.name} was not ready within {self.startup_timeout:g} s "
                    f"({self._readiness_description()}); command: {' '.join(self.argv)}\n"
                    f"log tail:\n{_tail(self.log_text(since_start=True))}"
                )
            time.sleep(_POLL_INTERVAL_S)

    def _readiness_description(self) -> str:
        parts = []
        if self.ready_check is not None:
            parts.append("readiness check")
        if self.ready_url is not None:
            parts.append(f"GET {self.ready_url} returning 200")
        if self.ready_pattern is not None:
            parts.append(f"a log line matching {self.ready_pattern.pattern!r}")
        return "waiting for " + " and ".join(parts) if parts else "no readiness check"

    def wait_for_log(self, pattern: str, *, timeout: float = 30.0, since_start: bool = True) -> re.Match[str]:
        """Wait until the output matches ``pattern`` and return the match.

        Raises:
            InfraError: if ``timeout`` s pass first.
        """
        compiled = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            match = compiled.search(self.log_text(since_start=since_start))
            if match is not None:
                return match
            if time.monotonic() > deadline:
                raise InfraError(
                    f"{self.name} wrote no line matching {pattern!r} within {timeout:g} s\n"
                    f"log tail:\n{_tail(self.log_text(since_start=since_start))}"
                )
            time.sleep(_POLL_INTERVAL_S)

    # -- stop ----------------------------------------------------------------

    def stop(self, timeout: float | None = None) -> int | None:
        """Send ``stop_signal`` to the main process; SIGKILL the group if it lingers.

        Args:
            timeout: seconds to wait before SIGKILL (default ``stop_timeout``).

        Returns:
            The exit status (negative for a signal), or ``None`` if the
            command was never started.
        """
        process = self._process
        if process is None:
            return self.returncode
        if process.poll() is None:
            try:
                process.send_signal(self.stop_signal)
            except ProcessLookupError:
                pass
            try:
                process.wait(timeout=self.stop_timeout if timeout is None else timeout)
            except subprocess.TimeoutExpired:
                logger.warning("%s ignored %s; sending SIGKILL", self.name, self.stop_signal.name)
        return self._finish()

    def kill(self) -> int | None:
        """SIGKILL the whole process group at once, as a crash would.

        Returns:
            The exit status, or ``None`` if the command was never started.
        """
        if self._process is None:
            return self.returncode
        return self._finish()

    def _finish(self) -> int:
        """Kill what is left of the process group, reap the main process and record its status."""
        process = self._process
        assert process is not None  # callers check
        # The group id equals the main pid (start_new_session). The kernel
        # keeps that id allocated while any member lives, so the signal
        # cannot reach an unrelated group.
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.returncode = process.wait()
        self._process = None
        logger.info("stopped %s (status %s)", self.name, self.returncode)
        return self.returncode

    def restart(self) -> Self:
        """Stop the command and start it again with the same arguments."""
        self.stop()
        return self.start()

    def close(self) -> None:
        """Stop the command and remove the temporary folder this object created."""
        self.stop()
        if self._own_dir is not None:
            shutil.rmtree(self._own_dir, ignore_errors=True)
            self._own_dir = None

    def __enter__(self) -> Self:
        if not self.running:
            try:
                self.start()
            except BaseException:
                self.close()
                raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def ember_command(*args: str) -> list[str]:
    """Return the command line that runs ``ember ARGS`` with this interpreter.

    The ``ember`` script beside ``sys.executable`` is used when the project is
    installed; otherwise ``ember.cli.main`` is called through ``python -c``.
    """
    script = Path(sys.executable).with_name("ember")
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script), *args]
    launcher = "import sys\nfrom ember.cli import main\nsys.exit(main())"
    return [sys.executable, "-c", launcher, *args]


def _python_env(env: Mapping[str, str | None] | None) -> dict[str, str | None]:
    """Return ``env`` plus unbuffered output and the repository on ``PYTHONPATH``."""
    merged: dict[str, str | None] = {"PYTHONUNBUFFERED": "1"}
    existing = (env or {}).get("PYTHONPATH", os.environ.get("PYTHONPATH"))
    merged["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), existing]))
    merged.update({key: value for key, value in (env or {}).items() if key != "PYTHONPATH"})
    return merged


class ServiceProcess(ManagedProcess):
    """``ember serve`` (or another API command) on a free loopback port.

    ``EMBER_HOST`` and ``EMBER_PORT`` are set for the process, so the default
    command needs no address options. The process is ready when
    ``GET /healthz`` returns 200.

    Args:
        env: extra environment, for instance ``EMBER_DATABASE_URL`` and
            ``EMBER_BROKER_URL``.
        args: the ``ember`` arguments (default ``["serve"]``); ``{port}`` in
            an argument is replaced by the port.
        argv: a whole command line instead of ``ember ARGS``, for instance
            ``[sys.executable, "-m", "uvicorn", "service.app:create_app",
            "--factory", "--port", "{port}"]``.
        port: the TCP port (default: a free one).
        health_path: the path that must return 200 (default ``/healthz``).
        startup_timeout: seconds to wait for readiness (default 90 s).
        stop_timeout: seconds between SIGTERM and SIGKILL (default 20 s).
        log_path: see :class:`ManagedProcess`.
    """

    def __init__(
        self,
        env: Mapping[str, str | None] | None = None,
        *,
        args: Sequence[str] | None = None,
        argv: Sequence[str] | None = None,
        port: int | None = None,
        health_path: str = "/healthz",
        startup_timeout: float = 90.0,
        stop_timeout: float = 20.0,
        log_path: str | os.PathLike[str] | None = None,
    ) -> None:
        self.port = port if port is not None else free_port()
        self.base_url = f"http://{LOOPBACK}:{self.port}"
        if argv is None:
            argv = ember_command(*(args if args is not None else ["serve"]))
        command = [part.replace("{port}", str(self.port)) for part in argv]
        environment = {"EMBER_HOST": LOOPBACK, "EMBER_PORT": str(self.port), **_python_env(env)}
        super().__init__(
            command,
            name="ember-serve",
            env=environment,
            ready_url=self.base_url + health_path,
            startup_timeout=startup_timeout,
            stop_timeout=stop_timeout,
            log_path=log_path,
        )

    def url(self, path: str) -> str:
        """Return the absolute URL of ``path`` on this service."""
        return self.base_url + (path if path.startswith("/") else "/" + path)


class WorkerProcess(ManagedProcess):
    """``ember worker --queues ...`` (or another worker command).

    The worker is ready when its output matches ``ready_pattern``. Celery logs
    ``NODE@HOST ready.`` once it consumes (the default node name is
    ``celery@HOST``), but only at log level INFO or lower, so the default
    pattern needs a worker that logs at INFO.

    Args:
        env: extra environment, for instance ``EMBER_BROKER_URL``.
        queues: the queues to consume (default ``("cpu",)``).
        args: the ``ember`` arguments (default ``["worker", "--queues",
            "cpu"]`` from ``queues``).
        argv: a whole command line instead of ``ember ARGS``.
        ready_pattern: the readiness regular expression (default
            ``\\S+@\\S+ ready\\.``, Celery's "NODE@HOST ready." line).
        startup_timeout: seconds to wait for readiness (default 90 s).
        stop_timeout: seconds between SIGTERM (Celery's warm shutdown, which
            lets the running task finish) and SIGKILL (default 30 s).
        log_path: see :class:`ManagedProcess`.
    """

    def __init__(
        self,
        env: Mapping[str, str | None] | None = None,
        *,
        queues: Sequence[str] = ("cpu",),
        args: Sequence[str] | None = None,
        argv: Sequence[str] | None = None,
        ready_pattern: str = r"\S+@\S+ ready\.",
        startup_timeout: float = 90.0,
        stop_timeout: float = 30.0,
        log_path: str | os.PathLike[str] | None = None,
    ) -> None:
        if not queues and args is None and argv is None:
            raise ValueError("queues must name at least one queue, for instance ('cpu',)")
        self.queues = tuple(queues)
        if argv is None:
            argv = ember_command(*(args if args is not None else ["worker", "--queues", ",".join(self.queues)]))
        super().__init__(
            argv,
            name="ember-worker",
            env=_python_env(env),
            ready_pattern=ready_pattern,
            startup_timeout=startup_timeout,
            stop_timeout=stop_timeout,
            log_path=log_path,
        )


# ---------------------------------------------------------------------------
# Servers


class _Server:
    """Shared lifecycle of the servers: a temp folder, a port, a process."""

    name = "server"
    _max_port_tries = 3

    def __init__(self, *, port: int | None, startup_timeout: float) -> None:
        self._fixed_port = port is not None
        self.port = port if port is not None else free_port()
        self.host = LOOPBACK
        self.startup_timeout = startup_timeout
        self.directory = Path(tempfile.mkdtemp(prefix=f"ember-{self.name}-"))
        self._process: ManagedProcess | None = None
        self._closed = False

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _ready(self) -> bool:
        raise NotImplementedError

    def _user(self) -> pwd.struct_passwd | None:
        return None

    def _prepare(self) -> None:
        """Do one-time set-up before the first start."""

    def _after_first_start(self) -> None:
        """Do one-time set-up once the server first responds."""

    @property
    def running(self) -> bool:
        """Whether the server process is running."""
        return self._process is not None and self._process.running

    @property
    def pid(self) -> int | None:
        """The server's process id, or ``None`` when stopped."""
        return self._process.pid if self._process is not None else None

    def log_text(self) -> str:
        """Return the server log of all starts."""
        return self._process.log_text() if self._process is not None else ""

    def start(self) -> Self:
        """Start the server and wait until it responds.

        A port chosen by :func:`free_port` that another process took in the
        meantime is replaced by a new one, up to three tries. After the
        first start the port stays fixed, so clients can reconnect after
        :meth:`restart`.

        Raises:
            InfraError: if the server does not start or respond in time.
        """
        if self._closed:
            raise InfraError(f"{self.name} was closed; create a new one")
        if self.running:
            return self
        first_start = self._process is None
        if first_start:
            self._prepare()

        for attempt in range(1, self._max_port_tries + 1):
            self._process = ManagedProcess(
                self._command(),
                name=self.name,
                cwd=self.directory,
                ready_check=self._ready,
                startup_timeout=self.startup_timeout,
                stop_timeout=30.0,
                stop_signal=self._stop_signal(),
                log_path=self.directory / f"{self.name}.log",
                user=self._user(),
            )
            try:
                self._process.start()
                break
            except InfraError as error:
                port_in_use = _PORT_IN_USE.search(self._process.log_text(since_start=True))
                if not port_in_use or self._fixed_port or attempt == self._max_port_tries:
                    raise InfraError(f"{self.name} on port {self.port} failed to start: {error}") from error
                logger.warning("%s: port %d was taken; retrying with another", self.name, self.port)
                self.port = free_port()

        if first_start:
            self._after_first_start()
        self._fixed_port = True
        return self

    def _stop_signal(self) -> signal.Signals:
        return signal.SIGTERM

    def stop(self) -> None:
        """Shut the server down cleanly and wait for it to exit."""
        if self._process is not None:
            self._process.stop()

    def kill(self) -> None:
        """SIGKILL the server and its children, as a crash would."""
        if self._process is not None:
            self._process.kill()

    def restart(self) -> Self:
        """Stop the server and start it again on the same port."""
        self.stop()
        return self.start()

    def close(self) -> None:
        """Stop the server and remove its temporary folder."""
        if self._closed:
            return
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)
        self._closed = True

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class RedisServer(_Server):
    """A ``redis-server`` on 127.0.0.1 without persistence.

    Nothing is saved to disk, so :meth:`restart` loses every key and every
    queued message, as a broker crash without persistence would.

    Args:
        port: the TCP port (default: a free one).
        startup_timeout: seconds to wait for a reply to ``PING`` (default 30 s).

    Raises:
        MissingBinaryError: if ``redis-server`` is not installed.

    Examples:
        >>> with RedisServer() as redis_server:  # doctest: +SKIP
        ...     broker_url = redis_server.url
    """

    name = "redis"

    def __init__(self, *, port: int | None = None, startup_timeout: float = 30.0) -> None:
        self.binary = find_redis_server()
        super().__init__(port=port, startup_timeout=startup_timeout)

    @property
    def url(self) -> str:
        """The URL of database 0, ``redis://127.0.0.1:PORT/0``."""
        return self.url_for(0)

    def url_for(self, database: int) -> str:
        """Return the URL of logical database ``database`` (0 to 15)."""
        if not 0 <= database <= 15:
            raise ValueError(f"database must be between 0 and 15 (Redis default), got {database}")
        return f"redis://{self.host}:{self.port}/{database}"

    def _command(self) -> list[str]:
        return [
            str(self.binary),
            "--port", str(self.port),
            "--bind", self.host,
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.directory),
            "--daemonize", "no",
        ]  # fmt: skip

    def _ready(self) -> bool:
        return self.ping()

    def ping(self) -> bool:
        """Return whether the server replies ``PONG`` to ``PING``."""
        try:
            return _redis_command(self.port, "PING") == b"+PONG"
        except OSError:
            return False

    def flushall(self) -> None:
        """Delete every key of every database.

        Raises:
            InfraError: if Redis does not confirm.
        """
        reply = _redis_command(self.port, "FLUSHALL", timeout=10.0)
        if reply != b"+OK":
            raise InfraError(f"redis FLUSHALL on port {self.port} failed: {reply!r}")


class PostgresServer(_Server):
    """A throw-away PostgreSQL cluster on 127.0.0.1.

    The cluster has a superuser ``ember`` with trust authentication and a
    database ``ember``. Durability settings are off for speed (``fsync``,
    ``synchronous_commit``, ``full_page_writes``), which loses data only on
    an operating-system crash: data survives :meth:`restart` and
    :meth:`kill`.

    Args:
        port: the TCP port (default: a free one).
        startup_timeout: seconds to wait for ``pg_isready`` (default 60 s).
        settings: extra ``postgres -c NAME=VALUE`` settings.

    Raises:
        MissingBinaryError: if the PostgreSQL server binaries are missing.
        InfraError: if running as root without an unprivileged account.

    Examples:
        >>> with PostgresServer() as database:  # doctest: +SKIP
        ...     engine = sqlalchemy.create_engine(database.url)
    """

    name = "postgres"
    user_name = "ember"
    database = "ember"

    def __init__(
        self,
        *,
        port: int | None = None,
        startup_timeout: float = 60.0,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        self.bin = find_postgres_bin()
        self.account = unprivileged_account()
        self.settings = {
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "shared_buffers": "32MB",
            **(settings or {}),
        }
        super().__init__(port=port, startup_timeout=startup_timeout)
        self.data_directory = self.directory / "data"

    @property
    def url(self) -> str:
        """The SQLAlchemy URL of database ``ember`` (driver psycopg 3)."""
        return self.url_for(self.database)

    @property
    def dsn(self) -> str:
        """The libpq URL of database ``ember``, for psycopg or psql."""
        return f"postgresql://{self.user_name}@{self.host}:{self.port}/{self.database}"

    def url_for(self, database: str) -> str:
        """Return the SQLAlchemy URL of ``database`` on this server."""
        return f"postgresql+psycopg://{self.user_name}@{self.host}:{self.port}/{database}"

    def _user(self) -> pwd.struct_passwd | None:
        return self.account

    def _client_env(self) -> dict[str, str]:
        environment = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
        environment.update({"LC_ALL": "C", "LANG": "C"})
        return environment

    def _prepare(self) -> None:
        if self.account is not None:
            os.chown(self.directory, self.account.pw_uid, self.account.pw_gid)
        command = [
            str(self.bin / "initdb"),
            "--pgdata", str(self.data_directory),
            "--username", self.user_name,
            "--auth", "trust",
            "--encoding", "UTF8",
            "--locale", "C",
            "--no-sync",
        ]  # fmt: skip
        account = self.account
        result = subprocess.run(
            command,
            cwd=self.directory,
            env=self._client_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
            user=account.pw_uid if account else None,
            group=account.pw_gid if account else None,
            extra_groups=[] if account else None,
        )
        if result.returncode != 0:
            raise InfraError(
                f"initdb failed with status {result.returncode}:\n{_tail(result.stdout + result.stderr)}"
            )

    def _command(self) -> list[str]:
        command = [
            str(self.bin / "postgres"),
            "-D", str(self.data_directory),
            "-p", str(self.port),
            "-k", str(self.directory),
            "-c", f"listen_addresses={self.host}",
        ]  # fmt: skip
        for key, value in self.settings.items():
            command += ["-c", f"{key}={value}"]
        return command

    def _stop_signal(self) -> signal.Signals:
        # SIGINT is PostgreSQL's "fast" shutdown: it ends client sessions and
        # writes a checkpoint. SIGTERM ("smart") would wait for every client
        # to disconnect, and a test's leftover connection pool would stall it.
        return signal.SIGINT

    def _ready(self) -> bool:
        result = subprocess.run(
            [str(self.bin / "pg_isready"), "-q", "-h", self.host, "-p", str(self.port),
             "-U", self.user_name, "-d", "postgres", "-t", "1"],
            env=self._client_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=10,
            check=False,
        )  # fmt: skip
        return result.returncode == 0

    def _after_first_start(self) -> None:
        self._run_client("createdb", self.database)

    def _run_client(self, tool: str, *args: str) -> None:
        command = [str(self.bin / tool), "-h", self.host, "-p", str(self.port), "-U", self.user_name, *args]
        result = subprocess.run(
            command,
            env=self._client_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if result.returncode != 0:
            raise InfraError(f"{' '.join(command)} failed with status {result.returncode}: {result.stderr.strip()}")

    def create_database(self, name: str) -> str:
        """Create an empty database and return its SQLAlchemy URL.

        Args:
            name: lower-case letters, digits and underscores, starting with a
                letter or underscore, at most 63 characters.

        Raises:
            ValueError: if ``name`` breaks that rule.
            InfraError: if ``createdb`` fails, for instance because the
                database exists.
        """
        self._check_name(name)
        self._run_client("createdb", name)
        return self.url_for(name)

    def drop_database(self, name: str) -> None:
        """Drop a database, ending its open sessions first.

        Raises:
            ValueError: if ``name`` is not a valid database name.
            InfraError: if ``dropdb`` fails.
        """
        self._check_name(name)
        self._run_client("dropdb", "--force", "--if-exists", name)

    @staticmethod
    def _check_name(name: str) -> None:
        if not _DATABASE_NAME.match(name):
            raise ValueError(
                f"invalid database name {name!r}: use lower-case letters, digits and underscores, "
                "starting with a letter or underscore, at most 63 characters"
            )
