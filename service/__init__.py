"""Ember's job service: a REST API that stores jobs and hands them to workers.

The service validates job specs, stores jobs and their results in a database
(SQLite by default, PostgreSQL in the lab deployment), sends job ids to Celery
workers and serves status, progress and results. It never runs a simulation
itself; :mod:`worker` does.
"""
