"""Prometheus metrics of the service, computed from the database at each scrape.

Job state lives in the database, and workers run in other processes, so the
job metrics are read from the database when ``/metrics`` is scraped rather
than counted in this process. Request counts and latencies are counted here.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import case, func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from service.config import QUEUES
from service.db.models import Job, JobKind, JobStatus, WorkerHeartbeat, utcnow

logger = logging.getLogger(__name__)

#: Upper bounds of the job duration histogram, in s.
DURATION_BUCKETS = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 24 * 3600.0)


class JobCollector(Collector):
    """Reads job counts, queue depth, durations and speed from the database."""

    def __init__(self, factory: sessionmaker[Session], worker_timeout_s: float) -> None:
        self.factory = factory
        self.worker_timeout_s = worker_timeout_s

    def collect(self) -> Iterator[GaugeMetricFamily | HistogramMetricFamily]:
        try:
            with self.factory() as session:
                yield from self._collect(session)
        except SQLAlchemyError:
            logger.exception("reading job metrics from the database failed")

    def _collect(self, session: Session) -> Iterator[GaugeMetricFamily | HistogramMetricFamily]:
        jobs = GaugeMetricFamily("ember_jobs", "Jobs (not sweeps) by state", labels=["state"])
        counts = dict(session.execute(select(Job.status, func.count()).where(Job.kind == JobKind.run.value).group_by(Job.status)).all())
        for state in JobStatus:
            jobs.add_metric([state.value], counts.get(state.value, 0))
        yield jobs

        depth = GaugeMetricFamily("ember_queue_depth", "Queued jobs per queue", labels=["queue"])
        queued = dict(
            session.execute(
                select(Job.queue, func.count())
                .where(Job.status == JobStatus.queued.value, Job.kind == JobKind.run.value)
                .group_by(Job.queue)
            ).all()
        )
        for queue in QUEUES:
            depth.add_metric([queue], queued.get(queue, 0))
        yield depth

        duration = Job.run_seconds
        finished = select(duration).where(
            Job.kind == JobKind.run.value, Job.status.in_([JobStatus.succeeded.value, JobStatus.failed.value])
        ).subquery()
        columns = [func.sum(case((finished.c.run_seconds <= bound, 1), else_=0)) for bound in DURATION_BUCKETS]
        row = session.execute(select(func.count(), func.coalesce(func.sum(finished.c.run_seconds), 0.0), *columns)).one()
        total, seconds, bucket_counts = int(row[0]), float(row[1]), [int(value or 0) for value in row[2:]]
        histogram = HistogramMetricFamily("ember_job_duration_seconds", "Run time of finished jobs over all attempts")
        buckets = [(f"{bound:g}", count) for bound, count in zip(DURATION_BUCKETS, bucket_counts)] + [("+Inf", total)]
        histogram.add_metric([], buckets, seconds)
        yield histogram

        speed = GaugeMetricFamily("ember_steps_per_second", "Simulation steps per second of the latest finished job per queue", labels=["queue"])
        for queue in QUEUES:
            value = session.scalar(
                select(Job.steps_per_second)
                .where(Job.queue == queue, Job.steps_per_second.is_not(None))
                .order_by(Job.finished_at.desc())
                .limit(1)
            )
            if value is not None:
                speed.add_metric([queue], float(value))
        yield speed

        workers = GaugeMetricFamily("ember_workers", "Workers that sent a heartbeat recently, per queue", labels=["queue"])
        live = live_workers(session, self.worker_timeout_s)
        for queue in QUEUES:
            workers.add_metric([queue], live.get(queue, 0))
        yield workers


def live_workers(session: Session, timeout_s: float) -> dict[str, int]:
    """Return how many workers per queue sent a heartbeat within ``timeout_s``."""
    from datetime import timedelta

    cutoff = utcnow() - timedelta(seconds=timeout_s)
    counts: dict[str, int] = {}
    for (queues,) in session.execute(select(WorkerHeartbeat.queues).where(WorkerHeartbeat.last_seen_at >= cutoff)):
        for queue in queues.split(","):
            counts[queue] = counts.get(queue, 0) + 1
    return counts


class ServiceMetrics:
    """The registry of one application: job metrics plus HTTP request metrics."""

    def __init__(self, factory: sessionmaker[Session], worker_timeout_s: float) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(JobCollector(factory, worker_timeout_s))
        self.requests = Counter(
            "ember_http_requests", "HTTP requests by method, route and status", ["method", "route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "ember_http_request_duration_seconds", "HTTP request latency by route", ["method", "route"], registry=self.registry
        )
