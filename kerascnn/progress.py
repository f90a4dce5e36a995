"""One progress bar for long loops over images (tqdm on stderr), shared by inference and training."""

from __future__ import annotations

from typing import Iterable

PROGRESS_MIN_ITEMS = 64  # shorter loops show no bar


def progress(items: Iterable, enabled: bool, desc: str) -> Iterable:
    """``items`` wrapped in a tqdm bar when ``enabled`` and there are at least :data:`PROGRESS_MIN_ITEMS`.

    Args:
        items: what to loop over (materialised as a list to know its length).
        enabled: show the bar at all.
        desc: the bar's label.

    Returns:
        An iterable over the same items.
    """
    items = list(items)
    if not enabled or len(items) < PROGRESS_MIN_ITEMS:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="img", leave=False)


def progress_counter(total: int, desc: str, enabled: bool = True):
    """A bar advanced by hand (``bar.update(n)``), for work done in chunks.

    Args:
        total: how many items the work has.
        desc: the bar's label.
        enabled: ``False`` gives a bar that prints nothing.

    Returns:
        A ``tqdm`` instance; call ``update(n)`` as chunks finish and ``close()`` at the end.
    """
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="img", disable=not enabled or total == 0)
