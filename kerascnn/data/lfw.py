"""Readers for the LFW protocol files: ``pairs.txt`` (View 2 pairs) and ``people.txt``.

Files follow the official format: a header line (``folds<TAB>pairs_per_half`` for pairs,
``folds`` for people), then per fold the matched rows ``Name<TAB>i<TAB>j`` followed by the
mismatched rows ``NameA<TAB>i<TAB>NameB<TAB>j`` (pairs), or a count followed by
``Name<TAB>number_of_images`` rows (people). Image ``i`` of ``Name`` is
``<images>/<Name>/<Name>_<iiii>.jpg``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kerascnn.errors import DatasetError


@dataclass
class PairList:
    """Labelled image pairs with their folds.

    Attributes:
        left: path of the first image of each pair.
        right: path of the second image.
        same: ``bool`` array, True for matched (same person) pairs.
        fold: ``int`` array, the fold (0-based) of each pair.
        names: ``(name_left, name_right)`` of each pair.
    """

    left: list[str]
    right: list[str]
    same: np.ndarray
    fold: np.ndarray
    names: list[tuple[str, str]]

    def __len__(self) -> int:
        return len(self.left)

    @property
    def num_folds(self) -> int:
        return int(self.fold.max()) + 1 if len(self.fold) else 0

    def people_of_fold(self, fold: int) -> set[str]:
        """Every person named in the pairs of ``fold``."""
        return {n for (a, b), f in zip(self.names, self.fold) if f == fold for n in (a, b)}

    def select(self, mask) -> "PairList":
        """The pairs where ``mask`` is true."""
        idx = np.flatnonzero(mask)
        return PairList(
            [self.left[i] for i in idx], [self.right[i] for i in idx], self.same[idx],
            self.fold[idx], [self.names[i] for i in idx],
        )


def lfw_image_path(images_dir: str | os.PathLike, name: str, number: int, ext: str = ".jpg") -> str:
    """``<images_dir>/<name>/<name>_<number:04d><ext>``."""
    return os.path.join(os.fspath(images_dir), name, f"{name}_{int(number):04d}{ext}")


def _rows(path: Path) -> list[list[str]]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return [line.split() for line in text.splitlines() if line.strip()]


def read_pairs(pairs_file: str | os.PathLike, images_dir: str | os.PathLike, check_files: bool = True) -> PairList:
    """Read an LFW ``pairs.txt``.

    Args:
        pairs_file: the pairs file.
        images_dir: the folder of ``<Name>/<Name>_NNNN.jpg`` images.
        check_files: raise if an image named by a pair does not exist.

    Returns:
        A :class:`PairList` in file order.

    Raises:
        DatasetError: a malformed header or row (with its line number), or a missing image.
    """
    pairs_file = Path(pairs_file)
    rows = _rows(pairs_file)
    if not rows or len(rows[0]) != 2 or not all(t.isdigit() for t in rows[0]):
        raise DatasetError(f"{pairs_file}: first line must be '<folds> <pairs per half>', got {rows[:1]}")
    folds, per_half = int(rows[0][0]), int(rows[0][1])
    body = rows[1:]
    if len(body) != folds * 2 * per_half:
        raise DatasetError(
            f"{pairs_file}: header announces {folds} folds x 2 x {per_half} = {folds * 2 * per_half} pairs, "
            f"found {len(body)} rows"
        )
    left, right, same, fold, names = [], [], [], [], []
    for i, row in enumerate(body):
        line = i + 2
        if len(row) == 3:
            a, b, ia, ib = row[0], row[0], row[1], row[2]
        elif len(row) == 4:
            a, ia, b, ib = row
        else:
            raise DatasetError(f"{pairs_file}:{line}: expected 3 or 4 tab-separated fields, got {len(row)}")
        if not (ia.isdigit() and ib.isdigit()):
            raise DatasetError(f"{pairs_file}:{line}: image numbers must be integers, got {ia!r} and {ib!r}")
        left.append(lfw_image_path(images_dir, a, int(ia)))
        right.append(lfw_image_path(images_dir, b, int(ib)))
        same.append(len(row) == 3)
        fold.append(i // (2 * per_half))
        names.append((a, b))
    if check_files:
        for path in left + right:
            if not os.path.exists(path):
                raise DatasetError(f"{pairs_file}: image {path} named by a pair does not exist")
    return PairList(left, right, np.array(same), np.array(fold), names)


def read_people(people_file: str | os.PathLike) -> list[dict[str, int]]:
    """Read an LFW ``people.txt``: one ``{name: number_of_images}`` dict per set (fold).

    Raises:
        DatasetError: a malformed file (with its line number).
    """
    people_file = Path(people_file)
    rows = _rows(people_file)
    if not rows or len(rows[0]) != 1 or not rows[0][0].isdigit():
        raise DatasetError(f"{people_file}: first line must be the number of sets, got {rows[:1]}")
    sets, i = [], 1
    for _ in range(int(rows[0][0])):
        if i >= len(rows) or len(rows[i]) != 1 or not rows[i][0].isdigit():
            raise DatasetError(f"{people_file}:{i + 1}: expected the count of people of set {len(sets) + 1}")
        count = int(rows[i][0])
        people = {}
        for row in rows[i + 1:i + 1 + count]:
            if len(row) != 2 or not row[1].isdigit():
                raise DatasetError(f"{people_file}: malformed row {row}")
            people[row[0]] = int(row[1])
        if len(people) != count:
            raise DatasetError(f"{people_file}: set {len(sets) + 1} announces {count} people, found {len(people)}")
        sets.append(people)
        i += 1 + count
    return sets
