"""What a gallery location names: a SQLite file, a database URL, or a libpq key=value string.

:func:`open_store` opens the store a location names; :func:`url_scheme`, :func:`is_conninfo`
and :func:`is_database` tell the kinds apart without ever echoing the location's text.
"""

from __future__ import annotations

import importlib
import re
from typing import Any

from kerascnn.errors import GalleryInputError
from kerascnn.face.gallery.sqlite import SQLiteStore
from kerascnn.face.gallery.store import GalleryStore

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_CONNINFO = re.compile(r"\s*[A-Za-z_]+\s*=")


def url_scheme(location: Any) -> str | None:
    """The scheme of a database URL (``scheme://...``), lower-cased.

    Args:
        location: a gallery location.

    Returns:
        The scheme, or None when ``location`` is not a URL (a file path, a key=value string).
    """
    match = _SCHEME.match(location) if isinstance(location, str) else None
    return match.group(1).lower() if match else None


def is_conninfo(location: Any) -> bool:
    """True for a libpq ``key=value`` string (``"host=db user=kiosk dbname=faces"``): text that
    starts with ``word=``. (A file of such a name is written ``./word=...``.)"""
    return isinstance(location, str) and _CONNINFO.match(location) is not None


def is_database(location: Any) -> bool:
    """True for the location of a gallery in a database server (a URL or a libpq key=value
    string) rather than a file path."""
    return url_scheme(location) is not None or is_conninfo(location)


# URL scheme -> "module:class" of its store; a key=value string opens PostgreSQL, a file path SQLite.
STORES = {
    "postgresql": "kerascnn.face.gallery.postgres:PostgresStore",
    "postgres": "kerascnn.face.gallery.postgres:PostgresStore",
}


def open_store(location: Any, create: bool, timeout: float, read_only: bool) -> GalleryStore:
    """The store a location names: a ``scheme://`` URL's store (see :data:`STORES`; the scheme in
    any case), PostgreSQL for a libpq key=value string, else a SQLite file.

    Raises:
        GalleryInputError: a URL whose scheme no store serves (the message shows the scheme only).
    """
    scheme = "postgresql" if is_conninfo(location) else url_scheme(location)
    if scheme is not None:
        if scheme not in STORES:
            raise GalleryInputError(
                f"gallery {scheme}://... has an unknown scheme: expected a file path"
                + "".join(f" or {s}://..." for s in sorted(STORES))
            )
        module, cls = STORES[scheme].split(":")
        return getattr(importlib.import_module(module), cls)(location, create, timeout, read_only)
    return SQLiteStore(location, create, timeout, read_only)
