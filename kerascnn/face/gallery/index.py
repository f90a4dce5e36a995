"""The in-memory search index of a gallery: its unit templates, kept up to date and searched.

The index holds every template as a float32 unit vector (``matrix``) and, when faiss is installed
(the ``ann`` extra), also as an 8-bit scalar-quantized code (a quarter of the bytes) with the
norm of its quantization error (``errors``). It is updated in place: :meth:`SearchIndex.replace`
drops every template of the identities a change touched and adds their current ones, so a
searching process follows other processes' enrollments and removals without reloading.

Exact search answers exactly what the float32 product ``queries @ matrix.T`` answers (an
identity's score is its best template's cosine similarity):

- a few queries (at most :data:`COMPACT_MAX_QUERIES`, in an index of at least
  :data:`COMPACT_MIN_TEMPLATES`) with the 8-bit codes: the scan is
  memory-bound, so it reads the codes (faiss's SIMD kernel). Each approximate score ``s~`` is
  within ``e`` (the template's error norm, plus a rounding margin) of the float32 score, so the
  templates whose upper bound ``s~ + e`` reaches the ``m``-th best lower bound ``s~ - e`` hold the
  float32 top ``m``; only they are re-ranked in float32. (NumPy has no int8 product: converting
  the codes to float32 costs what reading float32 does, so without faiss the scan is float32.)
- a batch: the product is compute-bound, so it runs in float32 (BLAS) directly.

The faiss ANN index (``index="faiss"``) answers approximately, from inverted lists over the
float32 unit templates; it is rebuilt after a change.
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from kerascnn.errors import GalleryError

_SEARCH_CHUNK = 1 << 27  # at most this many query x template scores (512 MB of float32) in memory at once
COMPACT_MAX_QUERIES = 8  # query chunks up to this size scan the 8-bit codes; larger ones the float32 matrix
COMPACT_MIN_TEMPLATES = 1 << 15  # below this the float32 product is faster (10^4: 0.15 ms vs 0.4 ms)
_MARGIN = 1e-4  # float32 rounding of the approximate and exact scores, far above its worst case


class SearchIndex:
    """The unit templates of a gallery's identities, for exact (compact) and faiss search.

    Args:
        dim: the templates' dimension.
        compact: keep 8-bit codes for the scan of a few queries (needs faiss; default: when
            faiss is installed).

    Attributes:
        generation: the gallery's change counter this index reflects.
        size: the number of templates.
        last_fetched: templates the last :meth:`replace` added (what the store had to send).
    """

    def __init__(self, dim: int, compact: bool | None = None) -> None:
        self.dim = int(dim)
        self.generation: int | None = None
        self.size = 0
        self.last_fetched = 0
        self._codes = _scalar_quantizer(self.dim) if compact is not False else None  # faiss SQ8 or None
        if compact and self._codes is None:
            raise GalleryError("the compact exact search needs the faiss package: pip install faiss-cpu (the 'ann' extra)")
        self._matrix = np.zeros((0, self.dim), np.float32)
        self._errors = np.zeros(0, np.float32)
        self._owner = np.zeros(0, np.int64)  # per template: its identity's slot
        self.names = np.zeros(0, dtype=object)  # per slot: the identity's name (None: a free slot)
        self._slot_of: dict[int, int] = {}  # identity id -> slot
        self._free: list[int] = []
        self._most: int | None = None
        self._max_error: float | None = None
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
    def compact(self) -> bool:
        """True when a few queries scan the 8-bit codes."""
        return self._codes is not None

    @property
    def bytes_per_template(self) -> dict[str, int]:
        """Memory per template: the float32 matrix and owner, and the 8-bit codes and error norm."""
        return {"float32": 4 * self.dim + 8, "int8_codes": self.dim + 4 if self.compact else 0}

    def replace(self, generation: int, identity_ids: Iterable[int], owners: np.ndarray, names: dict[int, str],
                matrix: np.ndarray) -> None:
        """Bring the index to ``generation``: drop every template of ``identity_ids``, then add ``matrix``.

        Args:
            generation: the gallery's change counter after the change.
            identity_ids: the identities the change touched (added, removed, renamed, enrolled).
            owners: per added template, its identity's id.
            names: the name of each identity in ``owners``.
            matrix: ``(len(owners), dim)`` unit float32 templates: the touched identities'
                current templates (none of a removed identity).
        """
        slots = [self._slot_of.pop(i) for i in set(identity_ids) if i in self._slot_of]
        if slots:
            self._drop(np.flatnonzero(np.isin(self.owner, slots)))
            self.names[slots] = None
            self._free.extend(slots)
        if len(owners):
            ids, inverse = np.unique(np.asarray(owners, np.int64), return_inverse=True)
            slot_of_id = np.array([self._slot(int(i), names[int(i)]) for i in ids], np.int64)
            matrix = np.ascontiguousarray(matrix, dtype=np.float32)
            self._reserve(self.size + len(matrix))
            end = self.size + len(matrix)
            self._matrix[self.size:end], self._owner[self.size:end] = matrix, slot_of_id[inverse.ravel()]
            if self._codes is not None:
                self._errors[self.size:end] = _encode(self._codes, matrix, room=len(self._matrix))
            self.size = end
        self.generation = generation
        self.last_fetched = len(owners)
        self._most = self._max_error = None
        self._faiss = None

    def _drop(self, rows: np.ndarray) -> None:
        """Remove templates ``rows`` (sorted): the last templates move into their places, so a
        removal costs O(removed), not a copy of the index; the 8-bit codes move alike."""
        if not len(rows):
            return
        n = self.size - len(rows)
        holes = rows[rows < n]
        kept = np.ones(self.size - n, bool)
        kept[rows[rows >= n] - n] = False
        movers = np.arange(n, self.size)[kept]  # the templates after the new end that stay
        for array in (self._matrix, self._errors, self._owner):
            array[holes] = array[movers]
        if self._codes is not None:
            code_size = self._codes.sa_code_size()
            codes = _faiss().rev_swig_ptr(self._codes.codes.data(), self.size * code_size).reshape(self.size, -1)
            codes[holes] = codes[movers]
            self._codes.ntotal = n
            self._codes.codes.resize(n * code_size)  # keeps its capacity
        self.size = n

    def _slot(self, identity_id: int, name: str) -> int:
        slot = self._slot_of.get(identity_id)
        if slot is None:
            if not self._free:  # room for more identities (doubling: amortized O(1) each)
                self._free = list(range(2 * len(self.names) + 16 - 1, len(self.names) - 1, -1))
                self.names = np.concatenate([self.names, np.full(len(self._free), None, dtype=object)])
            slot = self._free.pop()
            self._slot_of[identity_id] = slot
        self.names[slot] = name
        return slot

    def _reserve(self, n: int) -> None:
        """Room for ``n`` templates and an eighth more, so that the enrollments that follow a load
        append without copying the index (growing by 1/8 keeps adding amortized O(added))."""
        if n <= len(self._matrix):
            return
        capacity = n + n // 8 + 1024
        for attr in ("_matrix", "_errors", "_owner"):
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
        compact = self.compact and len(queries) <= COMPACT_MAX_QUERIES and n >= COMPACT_MIN_TEMPLATES
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
        idx = _top_k_blocked(scores, want)
        return idx, np.take_along_axis(scores, idx, axis=1)

    def _top_compact(self, queries: np.ndarray, want: int) -> tuple[np.ndarray, np.ndarray]:
        """As :meth:`_top_float32`, scanning the 8-bit codes and re-ranking the candidates in float32.

        The scan returns the ``m`` best approximate scores; when a template beyond them could
        still reach the ``want``-th best lower bound (``s~_m + max(e) >= bar``), ``m`` grows.
        """
        if self._max_error is None:
            self._max_error = float(self._errors[: self.size].max()) + _MARGIN
        idx = np.empty((len(queries), want), np.int64)
        scores = np.empty((len(queries), want), np.float32)
        for q, query in enumerate(queries):
            m = min(self.size, max(16 * want, 1024))
            while True:
                approx, ids = self._codes.search(query[None], m)
                approx, ids = approx[0], ids[0]
                errors = self._errors[ids] + _MARGIN
                bar = np.partition(approx - errors, m - want)[m - want]  # the want-th best lower bound
                if m == self.size or approx[-1] + self._max_error < bar:
                    break
                m = min(self.size, 8 * m)
            candidates = ids[approx + errors >= bar]
            exact = self.matrix[candidates] @ query
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
        rows, width = templates.shape
        owners = np.where(templates >= 0, self.owner[np.maximum(templates, 0)], -1)
        # first occurrence of each owner in its row: sort each row by owner (stably, so the best
        # of an owner's templates comes first) and keep the heads of the runs
        order = np.argsort(owners, axis=1, kind="stable")
        ranked = np.take_along_axis(owners, order, axis=1)
        head = np.ones_like(ranked, dtype=bool)
        head[:, 1:] = ranked[:, 1:] != ranked[:, :-1]
        first = np.zeros_like(head)
        np.put_along_axis(first, order, head & (ranked >= 0), axis=1)
        # the first k of them, in rank order
        keep = first & (np.cumsum(first, axis=1) <= k)
        count = keep.sum(axis=1)
        cols = np.argsort(~keep, axis=1, kind="stable")[:, :k]  # the kept columns, left to right
        filled = np.arange(k)[None, :] < count[:, None]
        picked = np.take_along_axis(owners, cols, axis=1)
        names = np.where(filled, self.names[np.where(filled, picked, 0)], None).astype(object)
        best = np.where(filled, np.take_along_axis(scores, cols, axis=1), -np.inf).astype(np.float32)
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


def _faiss() -> Any:
    import faiss

    return faiss


def _scalar_quantizer(dim: int) -> Any:
    """An empty faiss 8-bit scalar quantizer of inner products, or None without faiss."""
    try:
        faiss = _faiss()
    except ImportError:
        return None
    return faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_8bit_uniform, faiss.METRIC_INNER_PRODUCT)


def _encode(codes: Any, matrix: np.ndarray, room: int = 0) -> np.ndarray:
    """Append ``matrix``'s 8-bit codes to ``codes``, with memory for ``room`` codes in all (so that
    later appends do not copy them); returns each row's error norm ``||x - decode(code)||``.

    The quantizer's range, the same for every component, is set by the first rows it sees (1.5
    times their largest component, at most 1: unit vectors); a later component outside it is
    clipped, which only makes that template's (measured) error larger.
    """
    if not codes.is_trained:
        reach = min(1.0, 1.5 * float(np.abs(matrix).max()))
        codes.train(np.array([[-reach] * matrix.shape[1], [reach] * matrix.shape[1]], np.float32))
    error = matrix - codes.sa_decode(codes.sa_encode(matrix))
    codes.add(matrix)
    used = codes.ntotal * codes.sa_code_size()
    if room * codes.sa_code_size() > used:  # a vector keeps its capacity when it shrinks
        codes.codes.resize(room * codes.sa_code_size())
        codes.codes.resize(used)
    return np.linalg.norm(error, axis=1).astype(np.float32)


def _top_k_blocked(scores: np.ndarray, k: int, block: int = 1024) -> np.ndarray:
    """:func:`_top_k` of a wide score matrix, reading it once instead of partitioning every row.

    The maxima of blocks of ``block`` columns bound the answer: the ``k``-th largest block
    maximum ``L`` of a row is at most its ``k``-th largest score (``k`` blocks each hold a score of
    at least ``L``), so its top ``k`` lies in the blocks whose maximum reaches ``L``; only those
    few blocks are gathered and ranked.
    """
    rows, n = scores.shape
    blocks = n // block
    if blocks < 4 * k or rows == 0:
        return _top_k(scores, k)
    maxima = scores[:, : blocks * block].reshape(rows, blocks, block).max(axis=2)
    if blocks * block < n:
        maxima = np.concatenate([maxima, scores[:, blocks * block:].max(axis=1, keepdims=True)], axis=1)
    bar = -np.partition(-maxima, k - 1, axis=1)[:, k - 1]  # the k-th largest block maximum of each row
    out = np.empty((rows, k), np.int64)
    for r in range(rows):  # a few blocks per row: cheap beside the product itself
        chosen = np.flatnonzero(maxima[r] >= bar[r])
        cols = (chosen[:, None] * block + np.arange(block)[None, :]).ravel()
        cols = cols[cols < n]
        out[r] = cols[_top_k(scores[r, cols][None], k)[0]]
    return out


def _top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the ``k`` largest scores of each row, best first."""
    n = scores.shape[1]
    if k < n:
        idx = np.argpartition(scores, n - k, axis=1)[:, n - k:]
    else:
        idx = np.broadcast_to(np.arange(n), scores.shape)
    order = np.argsort(-np.take_along_axis(scores, idx, axis=1), axis=1, kind="stable")
    return np.take_along_axis(idx, order, axis=1)
