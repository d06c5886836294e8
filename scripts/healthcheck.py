"""Container health checks for the Ember API and Celery workers.

Usage:
    python healthcheck.py http URL
        exit 0 when GET URL returns 200.
    python healthcheck.py worker [--broker URL] [--host NAME] [--timeout S]
        exit 0 when a Celery worker on this host replies to a ping sent
        through the broker. The broker defaults to $EMBER_BROKER_URL and the
        host to this machine's hostname (in a container, the container's).

Exit status 1 means unhealthy; the reason is printed on stderr.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import urllib.error
import urllib.request


def check_http(url: str, timeout: float) -> str | None:
    """Return ``None`` when ``url`` returns 200, else the reason it failed."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            if response.status == 200:
                return None
            return f"GET {url} returned {response.status}, expected 200"
    except urllib.error.HTTPError as error:
        return f"GET {url} returned {error.code}, expected 200"
    except (urllib.error.URLError, OSError) as error:
        return f"GET {url} failed: {error}"


def check_worker(broker_url: str, host: str, timeout: float) -> str | None:
    """Return ``None`` when a worker whose node name ends in ``@host`` replies to a ping."""
    from celery import Celery  # imported here so the http check needs only the standard library

    app = Celery("ember-healthcheck", broker=broker_url)
    try:
        replies = app.control.ping(timeout=timeout)
    except Exception as error:  # noqa: BLE001 - any broker error means unhealthy
        return f"ping through {_redact(broker_url)} failed: {error}"
    finally:
        app.close()
    nodes = [name for reply in replies for name in reply]
    if any(name.endswith("@" + host) for name in nodes):
        return None
    return f"no worker on host {host!r} answered within {timeout:g} s; answering nodes: {nodes or 'none'}"


def _redact(url: str) -> str:
    """Return ``url`` with any password replaced by ``***``."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    credentials, _, location = rest.rpartition("@")
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{location}"


def main(argv: list[str] | None = None) -> int:
    """Run one check and return the exit status (0 healthy, 1 unhealthy)."""
    parser = argparse.ArgumentParser(description="Health checks for Ember containers.")
    commands = parser.add_subparsers(dest="command", required=True)

    http = commands.add_parser("http", help="GET a URL and expect 200")
    http.add_argument("url")
    http.add_argument("--timeout", type=float, default=5.0, help="request timeout in s (default 5)")

    worker = commands.add_parser("worker", help="ping the Celery worker on this host")
    worker.add_argument("--broker", default=os.environ.get("EMBER_BROKER_URL", ""), help="broker URL")
    worker.add_argument("--host", default=socket.gethostname(), help="host part of the worker's node name")
    worker.add_argument("--timeout", type=float, default=5.0, help="ping timeout in s (default 5)")

    args = parser.parse_args(argv)
    if args.command == "http":
        problem = check_http(args.url, args.timeout)
    elif not args.broker:
        problem = "no broker URL: set EMBER_BROKER_URL or pass --broker"
    else:
        problem = check_worker(args.broker, args.host, args.timeout)

    if problem is not None:
        print(f"unhealthy: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
