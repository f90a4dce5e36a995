"""Who may call what: the API key of a request, checked against the gallery's keys.

A key comes in ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``. Keys are stored hashed
in the gallery (:mod:`kerascnn.face.gallery.keys`); each request looks its key up, so a key
revoked with ``kerascnn keys revoke`` is refused from the next request on, by every server.
"""

from __future__ import annotations

import threading

from kerascnn.face.gallery import Gallery
from kerascnn.face.gallery.keys import ApiKey, check_key, check_scope, create_key, has_keys, list_keys, revoke_key
from kerascnn.serve.errors import ServiceError


class Authoriser:
    """Checks requests' keys against one gallery's.

    Args:
        location: the gallery (its own connection, beside the one of :class:`~kerascnn.face.faces.Faces`),
            which must exist.
        required: refuse requests without a valid key; if false, every request may do everything.

    Raises:
        ServiceError: ``required`` and the gallery holds no valid key (the server must not start).
    """

    def __init__(self, location: str, required: bool) -> None:
        self.required = required
        self._gallery = Gallery(location, create=False)
        self._lock = threading.Lock()
        if required and not has_keys(self._gallery):
            self.close()
            raise ServiceError(503, "NoApiKey", f"gallery {location} holds no API key: make one with "
                               "`kerascnn keys create --gallery G --scope admin NAME`, or start with "
                               "--insecure-no-auth (loopback only)")

    def check(self, authorization: str | None, api_key: str | None, scope: str) -> ApiKey | None:
        """The caller's key if it may do what ``scope`` allows.

        Args:
            authorization: the ``Authorization`` header (``Bearer <key>``).
            api_key: the ``X-API-Key`` header.
            scope: what the endpoint needs: ``"read"``, ``"enroll"`` or ``"admin"``.

        Returns:
            The key, or None when keys are not required.

        Raises:
            ServiceError: 401 without a key or with an unknown or revoked one; 403 for a key of too
                small a scope.
        """
        check_scope(scope)
        if not self.required:
            return None
        token = api_key
        if token is None and authorization is not None:
            kind, _, value = authorization.partition(" ")
            token = value.strip() if kind.lower() == "bearer" else None
        if not token:
            raise ServiceError(401, "Unauthorized", "no API key: send it as 'Authorization: Bearer <key>' or "
                               "'X-API-Key: <key>'")
        with self._lock:
            key = check_key(self._gallery, token)
        if key is None:
            raise ServiceError(401, "Unauthorized", "unknown or revoked API key")
        if not key.allows(scope):
            raise ServiceError(403, "Forbidden", f"key {key.name!r} has scope {key.scope!r}; this needs {scope!r}")
        return key

    def create(self, name: str, scope: str) -> str:
        """A new key's token (see :func:`~kerascnn.face.gallery.keys.create_key`)."""
        with self._lock:
            return create_key(self._gallery, name, scope)

    def list(self) -> list[ApiKey]:
        """The gallery's keys (see :func:`~kerascnn.face.gallery.keys.list_keys`)."""
        with self._lock:
            return list_keys(self._gallery)

    def revoke(self, name: str) -> bool:
        """Revoke a key (see :func:`~kerascnn.face.gallery.keys.revoke_key`)."""
        with self._lock:
            return revoke_key(self._gallery, name)

    def close(self) -> None:
        """Close the key gallery's connection."""
        self._gallery.close()
