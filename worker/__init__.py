"""Celery workers that run Ember jobs.

A message carries only a job id. The task claims the job in the database,
runs it with :func:`ember.runner.run_job` against a database-backed
:class:`~worker.store.DatabaseStore`, and writes progress, checkpoints and
results there. The database, not the broker, holds every job's state.
"""
