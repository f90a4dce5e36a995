"""API keys of a face service, kept in the gallery they open (table ``api_keys``).

A key is a random token shown once when it is made; the gallery stores only its sha256 (the
token is 32 random bytes: a hash is enough, nothing to brute-force), with a name, a scope and
its creation and revocation times. Scopes nest: ``read`` may verify, compare and identify;
``enroll`` may also enroll; ``admin`` may also remove people and manage keys.

The table is created by the first :func:`create_key` (``CREATE TABLE IF NOT EXISTS``, the same
statement in every store), so galleries without keys keep their format. Every replica of a
service on one PostgreSQL gallery sees a revocation at its next request.

Example:
    >>> from kerascnn.face.gallery import Gallery
    >>> from kerascnn.face.gallery.keys import check_key, create_key
    >>> with Gallery("faces.db") as gallery:                        # doctest: +SKIP
    ...     token = create_key(gallery, "kiosk", "read")              # print it once
    ...     check_key(gallery, token).scope                           # 'read'
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import asdict, dataclass

from kerascnn.errors import ApiKeyError, GalleryInputError, UnknownApiKeyError
from kerascnn.face.gallery.api import Gallery
from kerascnn.face.gallery.records import check_name, now

SCOPES = ("read", "enroll", "admin")  # each may do what the ones before it may
TOKEN_PREFIX = "kcnn_"
_DDL = ("CREATE TABLE IF NOT EXISTS api_keys (name TEXT PRIMARY KEY, scope TEXT NOT NULL, "
        "key_sha256 TEXT NOT NULL UNIQUE, created TEXT NOT NULL, revoked TEXT)")


@dataclass(frozen=True)
class ApiKey:
    """One stored key (never its token).

    Attributes:
        name: what the key is for (``"front door kiosk"``).
        scope: ``"read"``, ``"enroll"`` or ``"admin"``.
        created: when it was made (UTC, ISO 8601).
        revoked: when it was revoked, or None while it is valid.
    """

    name: str
    scope: str
    created: str
    revoked: str | None = None

    def allows(self, scope: str) -> bool:
        """Whether this key may do what ``scope`` may (``admin`` allows ``read``)."""
        return self.revoked is None and SCOPES.index(self.scope) >= SCOPES.index(check_scope(scope))

    def to_dict(self) -> dict:
        return asdict(self)


def check_scope(scope: str) -> str:
    """``scope`` if it is one of :data:`SCOPES`, else ApiKeyError."""
    if scope not in SCOPES:
        raise ApiKeyError(f"unknown key scope {scope!r}: expected one of {', '.join(SCOPES)}")
    return scope


def _key_name(name: str) -> str:
    try:
        return check_name(name)
    except GalleryInputError as exc:
        raise ApiKeyError(str(exc).replace("identity name", "key name")) from exc


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_key(gallery: Gallery, name: str, scope: str) -> str:
    """Make a key: returns its token (show it once: only its hash is stored).

    Args:
        gallery: the gallery the key opens (writable).
        name: a name for the key, unique in the gallery (revoked keys keep theirs).
        scope: ``"read"``, ``"enroll"`` or ``"admin"``.

    Returns:
        The token, ``kcnn_`` and 43 URL-safe characters.

    Raises:
        ApiKeyError: an unknown scope, a bad name, or a name already used.
        GalleryLockedError: the gallery is read-only.
    """
    scope, name = check_scope(scope), _key_name(name)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    gallery._check_writable()
    with gallery._store.writing() as conn:
        conn.execute(_DDL)
        if conn.execute("SELECT 1 FROM api_keys WHERE name = ?", (name,)).fetchone() is not None:
            raise ApiKeyError(f"gallery {gallery.location} already has a key named {name!r} (revoked keys keep "
                              "their names): choose another name")
        conn.execute("INSERT INTO api_keys (name, scope, key_sha256, created) VALUES (?, ?, ?, ?)",
                     (name, scope, _digest(token), now()))
    return token


def list_keys(gallery: Gallery) -> list[ApiKey]:
    """Every key of the gallery (valid and revoked), sorted by name; no token, no hash."""
    with gallery._store.reading() as conn:
        if "api_keys" not in gallery._store.tables(conn):
            return []
        rows = conn.execute("SELECT name, scope, created, revoked FROM api_keys").fetchall()
    return [ApiKey(*row) for row in sorted(rows)]


def revoke_key(gallery: Gallery, name: str) -> bool:
    """Revoke a key at once (every server on the gallery refuses it from its next request).

    Returns:
        True if the key was valid, False if it was already revoked.

    Raises:
        UnknownApiKeyError: the gallery has no key of that name.
    """
    name = _key_name(name)
    gallery._check_writable()
    with gallery._store.writing() as conn:
        conn.execute(_DDL)
        row = conn.execute("SELECT revoked FROM api_keys WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise UnknownApiKeyError(f"gallery {gallery.location} has no key named {name!r}")
        if row[0] is not None:
            return False
        conn.execute("UPDATE api_keys SET revoked = ? WHERE name = ?", (now(), name))
    return True


def check_key(gallery: Gallery, token: str) -> ApiKey | None:
    """The valid key whose token this is, or None (unknown or revoked)."""
    if not isinstance(token, str) or not token.startswith(TOKEN_PREFIX):
        return None
    with gallery._store.reading() as conn:
        if "api_keys" not in gallery._store.tables(conn):
            return None
        row = conn.execute("SELECT name, scope, created, revoked FROM api_keys WHERE key_sha256 = ?",
                           (_digest(token),)).fetchone()
    return None if row is None or row[3] is not None else ApiKey(*row)


def has_keys(gallery: Gallery) -> bool:
    """Whether the gallery holds at least one valid key."""
    return any(key.revoked is None for key in list_keys(gallery))
