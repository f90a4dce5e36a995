"""The in-memory search index of a gallery: its unit templates, searched exactly or with faiss.

Exact search is one matrix product per chunk of queries; the score of an identity is the best
cosine similarity among its templates. The faiss index (the ``ann`` extra) answers the same
question approximately, from inverted lists over the same unit templates.
"""

from __future__ import annotations

import numpy as np

from kerascnn.errors import GalleryError

_SEARCH_CHUNK = 1 << 25  # at most this many query x template scores in memory at once


class SearchIndex:
    """Unit templates sorted by identity, with each identity's first column, searched exactly or with faiss."""

    def __init__(self, generation: str | None, template_names: list[str], matrix: np.ndarray) -> None:
        self.generation = generation
        self.matrix = np.ascontiguousarray(matrix)
        starts = [0] + [i for i in range(1, len(template_names)) if template_names[i] != template_names[i - 1]]
        self.starts = np.asarray(starts, dtype=np.int64)
        self.names = np.asarray([template_names[i] for i in starts], dtype=object)
        self.owner = np.repeat(np.arange(len(starts)), np.diff(np.append(self.starts, len(template_names))))
        self._faiss = None

    @property
    def most_templates(self) -> int:
        """The largest number of templates of one identity."""
        return int(np.max(np.diff(np.append(self.starts, self.matrix.shape[0]))))

    def search_exact(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-``k`` identities: one matrix product, then the best ``k x most_templates``
        templates of each query, of which the first ``k`` distinct owners are the answer (an
        identity's rank is its best template's; no identity has more templates than that)."""
        n = self.matrix.shape[0]
        want = min(n, k * self.most_templates)
        step = max(1, _SEARCH_CHUNK // max(1, n))
        top_names, top_scores = [], []
        for i in range(0, len(queries), step):
            scores = queries[i:i + step] @ self.matrix.T
            idx = _top_k(scores, want)
            names, best = self._first_owners(idx, np.take_along_axis(scores, idx, axis=1), k)
            top_names.append(names)
            top_scores.append(best)
        return np.concatenate(top_names), np.concatenate(top_scores)

    def search_faiss(self, queries: np.ndarray, k: int, nprobe: int) -> tuple[np.ndarray, np.ndarray]:
        index = self._faiss_index(nprobe)
        # enough templates to see k distinct identities whenever the index finds them
        want = min(self.matrix.shape[0], k * self.most_templates)
        scores, ids = index.search(np.ascontiguousarray(queries, dtype=np.float32), want)
        return self._first_owners(ids, scores, k)

    def _first_owners(self, templates: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Per row of template indices sorted best first (``-1``: none), the first ``k`` owners."""
        if len(self.starts) == self.matrix.shape[0] and (templates[:, :k] >= 0).all():  # one template each
            return self.names[templates[:, :k]], scores[:, :k].astype(np.float32)
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
            if n < 10_000 or lists < 2:
                index = faiss.IndexFlatIP(dim)  # small galleries: exact is as fast
            else:
                index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, lists, faiss.METRIC_INNER_PRODUCT)
                index.train(self.matrix[np.random.default_rng(0).permutation(n)[: lists * 64]])
                index.nprobe = nprobe
            index.add(self.matrix)
            self._faiss = index
        return self._faiss


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
