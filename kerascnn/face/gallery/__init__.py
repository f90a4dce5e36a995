"""The enrollment gallery: enrolled people's face templates, kept safe and searched fast.

A gallery lives in a store (:mod:`~kerascnn.face.gallery.store`): one SQLite file by default
(:mod:`~kerascnn.face.gallery.sqlite`: WAL journal, transactions, a busy timeout, owner-only
permissions), or a PostgreSQL database shared by several machines
(:mod:`~kerascnn.face.gallery.postgres`, ``Gallery("postgresql://...")``, the ``postgres`` extra).
Every store holds:

- ``metadata``: format version, the embedding model's identity (:func:`model_identity`: name,
  input size, embedding dim, sha256 fingerprints of its weights and of the options that shape its
  templates, :func:`pipeline_identity` for a face pipeline), creation time and a change counter
  bumped by every write;
- ``identities``: one row per enrolled person (unique name, creation time);
- ``templates``: the embeddings (``float32`` little-endian bytes, never pickled), each with its
  identity, the sha256 of its source image and its creation time;
- ``changes``: the identities each write touched, under its change counter.

Names are data, never SQL: every query is parameterized. Each operation is one transaction, so a
process killed mid-way leaves every committed identity intact, and several processes can enroll
into the same gallery at once (writers wait up to ``timeout`` seconds for each other).

Search (:mod:`~kerascnn.face.gallery.index`) holds all templates in memory, as float32 and as
int8 codes, and updates them from the change log when another process enrolls or removes
someone. Exact search scans the int8 codes for a few queries and re-ranks in float32 the
templates that can reach the top (the float32 answer, reading a quarter of the bytes), and
multiplies in float32 for a batch; the score of an identity is the best cosine similarity among
its templates. An optional approximate index (faiss, the ``ann`` extra) answers through the same
API. Export and import use one portable file format (:mod:`~kerascnn.face.gallery.fileformat`:
JSON or NPZ, no pickle).

This package imports neither TensorFlow nor Keras and never runs a face pipeline: it stores and
searches names and templates (plain arrays). Photos become templates in :mod:`kerascnn.face.faces`
(``kerascnn.face.open(...)``), which composes a face pipeline and a gallery.

Example:
    >>> from kerascnn.face.gallery import Gallery, model_identity
    >>> with Gallery("faces.db", model_identity(model)) as gallery:   # doctest: +SKIP
    ...     gallery.enroll("alice", embeddings)                          # (n, d) float32
    ...     names, scores = gallery.search(probes, k=3)                  # (m, 3), (m, 3)
"""

from kerascnn.face.gallery.api import Gallery, open_gallery
from kerascnn.face.gallery.fileformat import EXPORT_FORMAT, EXPORT_VERSION
from kerascnn.face.gallery.records import (
    IDENTITY_FIELDS,
    MAX_NAME_LENGTH,
    EnrollReport,
    IdentityInfo,
    model_identity,
    pipeline_identity,
    sha256_file,
)
from kerascnn.face.gallery.store import FORMAT_VERSION, GalleryStore

__all__ = [
    "EXPORT_FORMAT",
    "EXPORT_VERSION",
    "FORMAT_VERSION",
    "IDENTITY_FIELDS",
    "MAX_NAME_LENGTH",
    "EnrollReport",
    "Gallery",
    "GalleryStore",
    "IdentityInfo",
    "model_identity",
    "open_gallery",
    "pipeline_identity",
    "sha256_file",
]
