"""``ember serve``: the API plus, by default, one embedded worker process.

With no configuration this creates ``./ember-data/``, migrates the SQLite
database, and starts the API on 127.0.0.1:8000 and one Celery worker whose
broker is Celery's SQLAlchemy transport on a second SQLite file. Ctrl-C (or
SIGTERM) stops the API and then sends SIGTERM to the worker. A running job
then stops at its next sample, saves a checkpoint and returns to the queue.

At start, with its worker, the server assumes it is the only worker of the
database: it returns every ``running`` job to the queue (its worker died
with the previous server), empties the broker queues and sends one message
per queued job, so jobs interrupted by a crash resume from their last
checkpoint. ``--no-worker`` starts the API alone and recovers nothing; the
lab deployment's workers do that with their recovery sweeps.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

from service.config import QUEUES, Settings

logger = logging.getLogger(__name__)

#: Seconds the worker gets to stop its job at a sample boundary before SIGKILL.
WORKER_STOP_TIMEOUT_S = 60.0
#: Restarts of a crashed embedded worker allowed per minute.
MAX_RESTARTS_PER_MINUTE = 5


def settings_environment(settings: Settings) -> dict[str, str]:
    """Return ``EMBER_*`` variables that reproduce ``settings`` in a child process."""
    environment = {}
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, bool):
            text = "true" if value else "false"
        else:
            text = str(value)
        environment[f"EMBER_{name.upper()}"] = text
    return environment


def worker_command(settings: Settings) -> list[str]:
    """Return the command line of the embedded worker: both queues, one job at a time, solo pool."""
    return [
        sys.executable,
        "-m",
        "service.cli",
        "worker",
        "--queues",
        ",".join(QUEUES),
        "--pool",
        "solo",
        "--hostname",
        f"embedded-{os.getpid()}@%h",
    ]


class EmbeddedWorker:
    """The worker subprocess of ``ember serve``, restarted if it crashes.

    It runs in its own process group, so a Ctrl-C in the terminal reaches only
    the server, which then stops the worker in order.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.process: subprocess.Popen[bytes] | None = None
        self.stopping = threading.Event()
        self.restarts: list[float] = []
        self.watchdog = threading.Thread(target=self._watch, name="ember-worker-watchdog", daemon=True)

    def start(self) -> None:
        """Start the worker process and the thread that restarts it after a crash."""
        self._spawn()
        self.watchdog.start()

    def _spawn(self) -> None:
        from worker.lifecycle import PARENT_PID_VARIABLE

        environment = {**os.environ, **settings_environment(self.settings), PARENT_PID_VARIABLE: str(os.getpid())}
        self.process = subprocess.Popen(worker_command(self.settings), env=environment, start_new_session=True)
        logger.info("embedded worker started (pid %d)", self.process.pid)

    def _watch(self) -> None:
        while not self.stopping.wait(1.0):
            process = self.process
            if process is None or process.poll() is None:
                continue
            now = time.monotonic()
            self.restarts = [moment for moment in self.restarts if now - moment < 60.0]
            if len(self.restarts) >= MAX_RESTARTS_PER_MINUTE:
                logger.error(
                    "embedded worker exited with status %s and was restarted %d times in a minute; not restarting. "
                    "Jobs stay queued until the server is restarted",
                    process.returncode,
                    len(self.restarts),
                )
                return
            logger.error("embedded worker exited with status %s; restarting it", process.returncode)
            self.restarts.append(now)
            self._spawn()

    def stop(self, timeout: float = WORKER_STOP_TIMEOUT_S) -> None:
        """Ask the worker to stop (SIGTERM: warm shutdown), then kill it after ``timeout`` s."""
        self.stopping.set()
        process = self.process
        if process is None or process.poll() is not None:
            return
        logger.info("stopping the embedded worker (pid %d)", process.pid)
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            logger.error("embedded worker did not stop within %g s; killing it", timeout)
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def kill(self) -> None:
        """Kill the worker's process group at once."""
        self.stopping.set()
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)


def recover_jobs(settings: Settings, factory: Any, celery_app: Any) -> int:
    """Queue again jobs interrupted by a stop or crash and send one message per queued job.

    Returns:
        How many messages were sent.
    """
    from service.db.session import transaction
    from service.jobs import requeue_orphans, send_safely
    from worker.celery_app import CeleryDispatcher

    with transaction(factory) as session:
        queued = requeue_orphans(session)
    with celery_app.connection_for_write() as connection:
        for queue in QUEUES:
            try:
                removed = connection.default_channel.queue_purge(queue) or 0
            except Exception:  # a queue that was never declared cannot be purged
                removed = 0
                logger.debug("queue %s could not be purged", queue, exc_info=True)
            if removed:
                logger.info("removed %d old messages from queue %s", removed, queue)
    sent = send_safely(CeleryDispatcher(celery_app), queued)
    if queued:
        logger.info("sent %d queued jobs to the worker", sent)
    return sent


def serve(settings: Settings, *, with_worker: bool = True) -> int:
    """Run the API (and the embedded worker) until SIGINT or SIGTERM.

    Returns:
        The exit status: 0 after a clean stop, 2 when the settings are rejected.
    """
    import uvicorn

    from service.app import create_app, ensure_local_user
    from service.db.session import make_engine, make_session_factory, upgrade_database

    try:
        settings.check_bind()
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade_database(settings.database_url)
    engine = make_engine(settings.database_url)
    if not settings.auth_enabled:
        ensure_local_user(make_session_factory(engine))
    app = create_app(settings, engine=engine)
    context = app.state.context

    worker = None
    if with_worker:
        recover_jobs(settings, context.factory, context.extras["celery"])
        worker = EmbeddedWorker(settings)
        worker.start()

    signals_seen: list[int] = []

    def note_signal(number: int, _frame: Any) -> None:
        # uvicorn raises the signal that stopped it again once it is done.
        # This handler absorbs it, so the worker is stopped in order. A second
        # signal during that stop kills the worker.
        signals_seen.append(number)
        if len(signals_seen) > 1 and worker is not None:
            worker.kill()

    signal.signal(signal.SIGINT, note_signal)
    signal.signal(signal.SIGTERM, note_signal)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level="info", lifespan="on", access_log=False)
    logger.info("serving on http://%s:%d (auth %s)", settings.host, settings.port, "on" if settings.auth_enabled else "off")
    try:
        uvicorn.Server(config).run()
    finally:
        if worker is not None:
            worker.stop()
        engine.dispose()
    logger.info("server stopped")
    return 0
