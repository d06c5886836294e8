"""Heartbeats and recovery sweeps of a worker process, besides running jobs.

Once the worker consumes, a thread in its main process

- writes a heartbeat row (host name, queues, pid) every
  ``heartbeat_interval_s``; ``/readyz`` counts workers by these rows;
- every few heartbeats, queues again (or fails, when out of attempts) the
  running jobs whose heartbeat is older than ``job_lease_s``: their worker
  died, perhaps killed mid-job, and a Redis broker would hold their
  unacknowledged message until its visibility timeout;
- sends the message again for queued jobs whose message is older than
  ``requeue_after_s``, which recovers messages a broker lost (a Redis restart
  without persistence). A duplicate message is harmless: only one claim wins.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Any

from celery.signals import worker_ready, worker_shutdown
from sqlalchemy import delete
from sqlalchemy.exc import DBAPIError

from service.db.models import WorkerHeartbeat, utcnow
from service.db.session import transaction
from service.jobs import reap_stale, resend_due, send_safely

logger = logging.getLogger(__name__)

#: Heartbeats between two recovery sweeps.
SWEEP_EVERY = 3
#: Set by `ember serve` for its embedded worker: the server's process id.
PARENT_PID_VARIABLE = "EMBER_EMBEDDED_PARENT_PID"


class WorkerMonitor(threading.Thread):
    """The heartbeat and recovery thread of one worker process.

    Args:
        runtime: the worker's database handles and dispatcher.
        hostname: the Celery node name, such as ``celery@host``.
        queues: the queues this worker consumes.
    """

    def __init__(self, runtime: Any, hostname: str, queues: list[str]) -> None:
        super().__init__(name="ember-worker-monitor", daemon=True)
        self.runtime = runtime
        self.hostname = hostname
        self.queues = sorted(queues)
        self.stopped = threading.Event()

    def run(self) -> None:
        ticks = 0
        interval = self.runtime.settings.heartbeat_interval_s
        while True:
            if parent_gone():
                logger.error("worker %s: the `ember serve` process that started it is gone; shutting down", self.hostname)
                os.kill(os.getpid(), signal.SIGTERM)
                return
            try:
                self.beat()
                if ticks % SWEEP_EVERY == 0:
                    self.sweep()
            except DBAPIError:
                logger.exception("worker %s: heartbeat or recovery sweep failed; retrying in %g s", self.hostname, interval)
            ticks += 1
            if self.stopped.wait(interval):
                return

    def beat(self) -> None:
        """Write this worker's heartbeat row."""
        now = utcnow()
        with transaction(self.runtime.factory) as session:
            row = session.get(WorkerHeartbeat, self.hostname)
            if row is None:
                session.add(WorkerHeartbeat(hostname=self.hostname, queues=",".join(self.queues), pid=os.getpid(), started_at=now, last_seen_at=now))
            else:
                row.queues, row.pid, row.last_seen_at = ",".join(self.queues), os.getpid(), now

    def sweep(self) -> None:
        """Queue again the jobs of dead workers and re-send lost messages."""
        settings = self.runtime.settings
        with transaction(self.runtime.factory) as session:
            requeued = reap_stale(session, lease_s=settings.job_lease_s)
            resent = resend_due(session, after_s=settings.requeue_after_s)
        if requeued or resent:
            send_safely(self.runtime.dispatcher, requeued + resent)

    def stop(self) -> None:
        """Stop the thread and remove the heartbeat row."""
        self.stopped.set()
        self.join(timeout=10)
        try:
            with transaction(self.runtime.factory) as session:
                session.execute(delete(WorkerHeartbeat).where(WorkerHeartbeat.hostname == self.hostname))
        except DBAPIError:
            logger.exception("worker %s: removing its heartbeat row failed", self.hostname)


def parent_gone() -> bool:
    """Return whether this is an embedded worker whose ``ember serve`` process died.

    ``ember serve`` starts its worker in a separate session, so that a Ctrl-C
    does not reach it twice, and puts its own pid in
    ``EMBER_EMBEDDED_PARENT_PID``. Without this check a killed server would
    leave its worker running.
    """
    expected = os.environ.get(PARENT_PID_VARIABLE)
    return expected is not None and str(os.getppid()) != expected


_monitor: WorkerMonitor | None = None


@worker_ready.connect
def _start_monitor(sender: Any = None, **_: Any) -> None:
    from worker.tasks import runtime_for

    global _monitor
    queues = sorted(sender.app.amqp.queues.consume_from or sender.app.amqp.queues)
    _monitor = WorkerMonitor(runtime_for(sender.app), sender.hostname, list(queues))
    _monitor.start()
    logger.info("worker %s consumes queues %s", sender.hostname, ", ".join(queues))


@worker_shutdown.connect
def _stop_monitor(**_: Any) -> None:
    if _monitor is not None:
        _monitor.stop()
        logger.info("worker %s stopped", _monitor.hostname)
