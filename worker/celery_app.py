"""The Celery application shared by the API (to send) and the workers (to run).

Settings follow the usual recipe for long jobs: late acknowledgement with a
prefetch of one, so a message is acknowledged only after its job ended and a
worker reserves no second job while it runs one; a broker visibility timeout
above the longest allowed job, so Redis does not hand a running job to a
second worker; no result backend, because job state lives in the database.
"""

from __future__ import annotations

import logging
from functools import lru_cache

from celery import Celery
from kombu import Exchange, Queue

from service.config import QUEUES, Settings, get_settings

logger = logging.getLogger(__name__)

#: The name of the task that runs one job.
RUN_JOB_TASK = "ember.run_job"


def make_celery(settings: Settings) -> Celery:
    """Build a Celery application for ``settings``.

    Args:
        settings: the broker URL, the runtime limit and the visibility timeout
            come from here.

    Returns:
        The application, with the ``ember.run_job`` task registered.
    """
    app = Celery("ember", broker=settings.broker_url, include=["worker.tasks", "worker.lifecycle"])
    transport_options: dict[str, object] = {"visibility_timeout": settings.broker_visibility_timeout_s}
    if settings.broker_url.startswith("sqla+sqlite"):
        # kombu passes these to create_engine; wait for the API's writes instead
        # of failing with "database is locked".
        transport_options = {"connect_args": {"timeout": 30}}
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_store_errors_even_if_ignored=False,
        task_default_queue="cpu",
        task_create_missing_queues=True,
        task_serializer="json",
        accept_content=["json"],
        broker_transport_options=transport_options,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        # The worker stops an over-long job itself (cooperatively, between
        # samples); the hard limit only catches a hung job, in prefork pools.
        task_time_limit=settings.max_runtime_s + 600.0,
        task_soft_time_limit=None,
        worker_cancel_long_running_tasks_on_connection_loss=False,
    )
    app.conf.task_queues = [Queue(name, Exchange(name, type="direct"), routing_key=name) for name in QUEUES]
    app.ember_settings = settings
    return app


@lru_cache(maxsize=1)
def default_app() -> Celery:
    """Return the Celery application of this process, built from the environment."""
    return make_celery(get_settings())


class CeleryDispatcher:
    """Sends job ids to the workers through a Celery application."""

    def __init__(self, app: Celery) -> None:
        self.app = app

    def send(self, job_id: str, queue: str) -> None:
        """Send the message that runs ``job_id`` to ``queue``."""
        self.app.send_task(RUN_JOB_TASK, args=[job_id], queue=queue)
        logger.info("sent job %s to queue %s", job_id, queue)


def __getattr__(name: str) -> Celery:
    # `celery -A worker.celery_app` looks for the attribute `app` (or `celery`).
    if name in ("app", "celery"):
        return default_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
