"""API tokens: creation, lookup and revocation.

A token is ``ember_`` followed by 43 random URL-safe characters (256 bits
from :func:`secrets.token_urlsafe`). It is shown once, when it is created;
the database keeps only its SHA-256 and its first 14 characters, which
identify it in listings. A presented token is found by that prefix and its
hash is compared with :func:`hmac.compare_digest`, in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db.models import ApiToken, User, utcnow

logger = logging.getLogger(__name__)

TOKEN_PREFIX = "ember_"
_PREFIX_LENGTH = len(TOKEN_PREFIX) + 8
_TOKEN_RE = re.compile(r"^ember_[A-Za-z0-9_-]{43}$")
USER_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
#: The user that every request acts as while authentication is off.
LOCAL_USER = "local"


def token_sha256(token: str) -> str:
    """Return the hex SHA-256 of a token, as stored."""
    return hashlib.sha256(token.encode()).hexdigest()


def check_user_name(name: str) -> str:
    """Return ``name`` if it is a valid user name.

    Raises:
        ValueError: if the name is empty, longer than 64 characters or uses
            characters other than letters, digits, ``_ . @ -``.
    """
    if not USER_NAME_RE.match(name):
        raise ValueError(
            f"user name {name!r} is invalid: use 1-64 letters, digits, '_', '.', '@' or '-', "
            "starting with a letter or digit"
        )
    return name


def get_or_create_user(session: Session, name: str, *, is_admin: bool = False) -> User:
    """Return the user ``name``, creating it when missing; ``is_admin`` upgrades an existing user."""
    check_user_name(name)
    user = session.scalar(select(User).where(User.name == name))
    if user is None:
        user = User(name=name, is_admin=is_admin, submissions=0)
        session.add(user)
        session.flush()
        logger.info("created user %s (admin=%s)", name, is_admin)
    elif is_admin and not user.is_admin:
        user.is_admin = True
    return user


@dataclass(frozen=True)
class CreatedToken:
    """A new token: the secret (shown once) and its listing prefix."""

    token: str
    prefix: str
    user: str
    is_admin: bool


def create_token(session: Session, *, user_name: str, is_admin: bool = False) -> CreatedToken:
    """Create a token for ``user_name``, creating the user if needed.

    Args:
        session: the session whose transaction the write joins.
        user_name: the user the token acts as.
        is_admin: make the user an admin (admins see and cancel every job).

    Returns:
        The token; only its hash is stored.
    """
    user = get_or_create_user(session, user_name, is_admin=is_admin)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiToken(user_id=user.id, token_sha256=token_sha256(token), prefix=token[:_PREFIX_LENGTH]))
    session.flush()
    logger.info("created a token %s... for user %s", token[:_PREFIX_LENGTH], user_name)
    return CreatedToken(token=token, prefix=token[:_PREFIX_LENGTH], user=user.name, is_admin=user.is_admin)


def authenticate(session: Session, token: str) -> User | None:
    """Return the user of a valid, unrevoked token, or ``None``.

    The token is found by its prefix, and its SHA-256 is compared with the
    stored one in constant time.
    """
    if not _TOKEN_RE.match(token):
        return None
    digest = token_sha256(token)
    candidates = session.scalars(
        select(ApiToken).where(ApiToken.prefix == token[:_PREFIX_LENGTH], ApiToken.revoked_at.is_(None))
    ).all()
    for candidate in candidates:
        if hmac.compare_digest(candidate.token_sha256, digest):
            return candidate.user
    return None


def list_tokens(session: Session) -> list[ApiToken]:
    """Return every token, newest first, with its user loaded."""
    return list(session.scalars(select(ApiToken).order_by(ApiToken.created_at.desc(), ApiToken.id.desc())))


def revoke_token(session: Session, prefix: str) -> int:
    """Revoke the tokens whose listing prefix starts with ``prefix``; return how many.

    Raises:
        ValueError: if ``prefix`` is shorter than 10 characters (too likely to
            match several tokens by mistake) or matches tokens of several users.
    """
    if len(prefix) < len(TOKEN_PREFIX) + 4:
        raise ValueError(
            f"token prefix {prefix!r} is too short: give at least {len(TOKEN_PREFIX) + 4} characters "
            "as shown by `ember token list`"
        )
    active = session.scalars(select(ApiToken).where(ApiToken.revoked_at.is_(None))).all()
    if len(prefix) > _PREFIX_LENGTH:
        # A whole token: match it by its hash, as authentication does.
        digest = token_sha256(prefix)
        matches = [token for token in active if hmac.compare_digest(token.token_sha256, digest)]
    else:
        matches = [token for token in active if token.prefix.startswith(prefix)]
    users = {token.user_id for token in matches}
    if len(users) > 1:
        raise ValueError(f"token prefix {prefix!r} matches tokens of {len(users)} users; give more characters")
    now = utcnow()
    for token in matches:
        token.revoked_at = now
        logger.info("revoked token %s... of user %s", token.prefix, token.user.name)
    return len(matches)
