"""Dependencies shared by the routes: context, session, current user, owned job.

``OwnedJob`` loads a job and checks that the caller may see it, in one
place: a job that does not exist and a job of another user both give the
same 404, so ids of other users' jobs cannot be probed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Annotated

from ember.spec import Limits
from fastapi import Depends, Header, Path, Request
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from service.auth import LOCAL_USER, authenticate
from service.config import Settings
from service.db.models import Job, User
from service.jobs import Dispatcher
from service.problems import Problem, not_found

logger = logging.getLogger(__name__)

#: Job ids are 32 lowercase hex digits; anything else cannot name a job.
JOB_ID_PATTERN = r"^[0-9a-f]{32}$"


@dataclass
class ServiceContext:
    """Everything a request handler needs, created once per application."""

    settings: Settings
    limits: Limits
    engine: Engine
    factory: sessionmaker[Session]
    dispatcher: Dispatcher
    extras: dict[str, object] = field(default_factory=dict)


def get_context(request: Request) -> ServiceContext:
    """Return the application's :class:`ServiceContext`."""
    context: ServiceContext = request.app.state.context
    return context


ContextDep = Annotated[ServiceContext, Depends(get_context)]


def get_session(context: ContextDep) -> Iterator[Session]:
    """Yield a session that is closed after the request."""
    with context.factory() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def _unauthorized(detail: str) -> Problem:
    return Problem(401, "unauthorized", "Unauthorized", detail, headers={"WWW-Authenticate": 'Bearer realm="ember"'})


def current_user(
    context: ContextDep,
    session: SessionDep,
    authorization: Annotated[str | None, Header(description="Bearer TOKEN")] = None,
) -> User:
    """Return the user that the request acts as.

    With authentication off every request acts as the admin user ``local``.

    Raises:
        Problem: 401 when the header is missing, malformed or names an
            unknown or revoked token.
    """
    if not context.settings.auth_enabled:
        user = session.scalar(select(User).where(User.name == LOCAL_USER))
        if user is None:
            raise Problem(503, "not-initialised", "Service not initialised", "the local user is missing; restart the service")
        return user
    if not authorization:
        raise _unauthorized("missing Authorization header; send 'Authorization: Bearer TOKEN' (create one with `ember token create`)")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthorized("the Authorization header must be 'Bearer TOKEN'")
    user = authenticate(session, token.strip())
    if user is None:
        raise _unauthorized("the token is unknown or revoked")
    return user


CurrentUser = Annotated[User, Depends(current_user)]


def owned_job(
    job_id: Annotated[str, Path(description="the job id, 32 hex digits")],
    session: SessionDep,
    user: CurrentUser,
) -> Job:
    """Return the job ``job_id`` if the caller owns it or is an admin.

    Raises:
        Problem: 404 when it does not exist or belongs to another user.
    """
    job = session.get(Job, job_id) if len(job_id) == 32 else None
    if job is None or (job.owner_id != user.id and not user.is_admin):
        raise not_found("job", job_id)
    return job


OwnedJob = Annotated[Job, Depends(owned_job)]
