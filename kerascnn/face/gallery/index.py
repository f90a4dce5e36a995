"""The in-memory search index of a gallery: its unit templates, kept up to date and searched.

The index holds every template twice: as float32 unit vectors (``matrix``) and as int8 codes
with one scale per template (``codes``, ``scales``; a quarter of the bytes), with the norm of each
template's quantization error (``errors``). It is updated in place: :meth:`SearchIndex.replace`
drops every template of the identities a change touched and adds their current ones, so a
searching process follows other processes' enrollments and removals without reloading.

Exact search answers exactly what the float32 product ``queries @ matrix.T`` answers (an
identity's score is its best template's cosine similarity):

- a few queries (at most :data:`COMPACT_MAX_QUERIES`): the scan is memory-bound, so it reads the
  int8 codes. Each approximate score ``s~`` is within ``e`` (the template's error norm, plus a
  rounding margin) of the float32 score, so the templates whose upper bound ``s~ + e`` reaches the
  ``m``-th best lower bound ``s~ - e`` hold the float32 top ``m``; only they are re-ranked in
  float32;
- a batch: the product is compute-bound, so it runs in float32 (BLAS) directly.

The faiss index (the ``ann`` extra) answers approximately, from inverted lists over the float32
unit templates; it is rebuilt after a change.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from kerascnn.errors import GalleryError

_SEARCH_CHUNK = 1 << 25  # at most this many query x template scores in memory at once
_CODE_CHUNK = 1 << 14  # templates converted from int8 at once by the compact scan (fits in cache)
COMPACT_MAX_QUERIES = 8  # query chunks up to this size scan the int8 codes; larger ones the float32 matrix
_MARGIN = 1e-4  # float32 rounding of the approximate and exact scores, far above its worst case


class SearchIndex:
    """The unit templates of a gallery's identities, for exact (compact) and faiss search.

    Args:
        dim: the templates' dimension.

    Attributes:
        generation: the gallery's change counter this index reflects.
        size: the number of templates.
        last_fetched: templates the last :meth:`replace` added (what the store had to send).
    """

    def __init__(self, dim: int) -> None:
        self.dim = int(dim)
        self.generation: int | None = None
        self.size = 0
        self.last_fetched = 0
        self._matrix = np.zeros((0, self.dim), np.float32)
        self._codes = np.zeros((0, self.dim), np.int8)
        self._scales = np.zeros(0, np.float32)
        self._errors = np.zeros(0, np.float32)
        self._owner = np.zeros(0, np.int64)  # per template: its identity's slot
        self.names = np.zeros(0, dtype=object)  # per slot: the identity's name (None: a free slot)
        self._slot_of: dict[int, int] = {}  # identity id -> slot
        self._free: list[int] = []
        self._most: int | None = None
        self._faiss = None

    # -- contents -------------------------------------------------------------------------------
    @property
    def matrix(self) -> np.ndarray:
        """The ``(size, dim)`` float32 unit templates."""
        return self._matrix[: self.size]

    @property
    def owner(self) -> np.ndarray:
        """Per template, the slot of its identity in :attr:`names`."""
        return self._owner[: self.size]

    @property
    def identities(self) -> int:
        """The number of identities with templates."""
        return len(self._slot_of)

    @property
    def most_templates(self) -> int:
        """The largest number of templates of one identity."""
        if self._most is None:
            self._most = int(np.bincount(self.owner).max()) if self.size else 0
        return self._most

    @property
    def bytes_per_template(self) -> dict[str, int]:
        """Memory per template: the int8 scan (codes, scale, error norm, owner) and the float32 re-rank."""
        return {"int8_scan": self.dim + 4 + 4 + 8, "float32_rerank": 4 * self.dim}

    def replace(self, generation: int, identity_ids: Iterable[int], rows: list[tuple[int, str, np.ndarray]]) -> None:
        """Bring the index to ``generation``: drop every template of ``identity_ids``, then add ``rows``.

        Args:
            generation: the gallery's change counter after the change.
            identity_ids: the identities the change touched (added, removed, renamed, enrolled).
            rows: ``(identity id, name, unit float32 template)`` of the touched identities' current
                templates (none for a removed identity).
        """
        slots = [self._slot_of.pop(i) for i in set(identity_ids) if i in self._slot_of]
        if slots:
            keep = ~np.isin(self.owner, slots)
            n = int(keep.sum())
            for array in (self._matrix, self._codes, self._scales, self._errors, self._owner):
                array[:n] = array[: self.size][keep]
            self.size = n
            self.names[slots] = None
            self._free.extend(slots)
        if rows:
            owners = np.array([self._slot(identity_id, name) for identity_id, name, _ in rows], np.int64)
            matrix = np.stack([r[2] for r in rows]).astype(np.float32)
            codes, scales, errors = quantize(matrix)
            self._reserve(self.size + len(rows))
            end = self.size + len(rows)
            self._matrix[self.size:end], self._codes[self.size:end] = matrix, codes
            self._scales[self.size:end], self._errors[self.size:end], self._owner[self.size:end] = scales, errors, owners
            self.size = end
        self.generation = generation
        self.last_fetched = len(rows)
        self._most = None
        self._faiss = None

    def _slot(self, identity_id: int, name: str) -> int:
        slot = self._slot_of.get(identity_id)
        if slot is None:
            if self._free:
                slot = self._free.pop()
            else:
                slot = len(self.names)
                self.names = np.append(self.names, None)
            self._slot_of[identity_id] = slot
        self.names[slot] = name
        return slot

    def _reserve(self, n: int) -> None:
        """Room for ``n`` templates (capacity doubles, so adding is amortized O(added))."""
        if n <= len(self._matrix):
            return
        capacity = max(n, 2 * len(self._matrix), 1024)
        for attr in ("_matrix", "_codes", "_scales", "_errors", "_owner"):
            old = getattr(self, attr)
            new = np.zeros((capacity,) + old.shape[1:], old.dtype)
            new[: self.size] = old[: self.size]
            setattr(self, attr, new)

    # -- search -----------------------------------------------------------------------------------
    def search_exact(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-``k`` identities of unit ``queries``: the best ``k x most_templates``
        templates of each query, of which the first ``k`` distinct owners are the answer (an
        identity's rank is its best template's; no identity has more templates than that)."""
        n = self.size
        want = min(n, k * self.most_templates)
        compact = len(queries) <= COMPACT_MAX_QUERIES
        step = COMPACT_MAX_QUERIES if compact else max(1, _SEARCH_CHUNK // max(1, n))
        top_names, top_scores = [], []
        for i in range(0, len(queries), step):
            chunk = queries[i:i + step]
            idx, scores = self._top_compact(chunk, want) if compact else self._top_float32(chunk, want)
            names, best = self._first_owners(idx, scores, k)
            top_names.append(names)
            top_scores.append(best)
        return np.concatenate(top_names), np.concatenate(top_scores)

    def _top_float32(self, queries: np.ndarray, want: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``want`` best templates of each query and their scores, from the float32 product."""
        scores = queries @ self.matrix.T
        idx = _top_k(scores, want)
        return idx, np.take_along_axis(scores, idx, axis=1)

    def _top_compact(self, queries: np.ndarray, want: int) -> tuple[np.ndarray, np.ndarray]:
        """As :meth:`_top_float32`, scanning the int8 codes and re-ranking the candidates in float32."""
        approx = np.empty((len(queries), self.size), np.float32)
        for start in range(0, self.size, _CODE_CHUNK):
            end = min(start + _CODE_CHUNK, self.size)
            approx[:, start:end] = queries @ self._codes[start:end].astype(np.float32).T
        approx *= self._scales[: self.size]
        errors = self._errors[: self.size] + _MARGIN
        idx = np.empty((len(queries), want), np.int64)
        scores = np.empty((len(queries), want), np.float32)
        for q, row in enumerate(approx):
            lower = row - errors
            bar = np.partition(lower, self.size - want)[self.size - want]  # the want-th best lower bound
            candidates = np.flatnonzero(row + errors >= bar)
            exact = self.matrix[candidates] @ queries[q]
            best = _top_k(exact[None], want)[0]
            idx[q], scores[q] = candidates[best], exact[best]
        return idx, scores

    def search_faiss(self, queries: np.ndarray, k: int, nprobe: int) -> tuple[np.ndarray, np.ndarray]:
        index = self._faiss_index(nprobe)
        # enough templates to see k distinct identities whenever the index finds them
        want = min(self.size, k * self.most_templates)
        scores, ids = index.search(np.ascontiguousarray(queries, dtype=np.float32), want)
        return self._first_owners(ids, scores, k)

    def _first_owners(self, templates: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Per row of template indices sorted best first (``-1``: none), the first ``k`` owners."""
        if self.most_templates == 1 and (templates[:, :k] >= 0).all():  # one template each
            return self.names[self.owner[templates[:, :k]]], scores[:, :k].astype(np.float32)
        names = np.empty((len(templates), k), dtype=object)
        best = np.full((len(templates), k), -np.inf, dtype=np.float32)
        for q in range(len(templates)):
            valid = templates[q] >= 0
            owners = self.owner[templates[q][valid]]
            _, first = np.unique(owners, return_index=True)
            first = np.sort(first)[:k]
            names[q, :len(first)] = self.names[owners[first]]
            best[q, :len(first)] = scores[q][valid][first]
        return names, best

    def _faiss_index(self, nprobe: int):
        if self._faiss is None:
            try:
                import faiss
            except ImportError as exc:
                raise GalleryError(
                    "index='faiss' needs the faiss package: pip install faiss-cpu (the 'ann' extra)"
                ) from exc
            n, dim = self.matrix.shape
            lists = int(4 * np.sqrt(n))
            matrix = np.ascontiguousarray(self.matrix)
            if n < 10_000 or lists < 2:
                index = faiss.IndexFlatIP(dim)  # small galleries: exact is as fast
            else:
                index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, lists, faiss.METRIC_INNER_PRODUCT)
                index.train(matrix[np.random.default_rng(0).permutation(n)[: lists * 64]])
                index.nprobe = nprobe
            index.add(matrix)
            self._faiss = index
        return self._faiss


def quantize(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Symmetric int8 codes of each row, its scale, and the norm of its error.

    Returns:
        ``(codes, scales, errors)``: ``matrix ~ scales[:, None] * codes`` with
        ``errors = ||matrix - scales[:, None] * codes||`` per row.
    """
    scales = (np.abs(matrix).max(axis=1) / 127).astype(np.float32)
    scales[scales == 0] = 1
    codes = np.clip(np.rint(matrix / scales[:, None]), -127, 127).astype(np.int8)
    errors = np.linalg.norm(matrix - scales[:, None] * codes, axis=1).astype(np.float32)
    return codes, scales, errors


def _unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, as float32."""
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the ``k`` largest scores of each row, best first."""
    n = scores.shape[1]
    if k < n:
        idx = np.argpartition(scores, n - k, axis=1)[:, n - k:]
    else:
        idx = np.broadcast_to(np.arange(n), scores.shape)
    order = np.argsort(-np.take_along_axis(scores, idx, axis=1), axis=1, kind="stable")
    return np.take_along_axis(idx, order, axis=1)
