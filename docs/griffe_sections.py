"""A griffe extension for the API reference: reads an ``Example:`` section as ``Examples:``.

kerascnn's docstrings title their doctest sections ``Example:`` (Google style as Sphinx's
napoleon reads it); griffe's Google parser knows only ``Examples:`` and would render the
``>>>`` lines as Markdown text. Loaded by ``mkdocs.yml``.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_EXAMPLE = re.compile(r"^Example:[ \t]*$", re.MULTILINE)


class ExampleSections(griffe.Extension):
    """Renames each docstring's ``Example:`` section to ``Examples:`` before it is parsed."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        """Rewrites the docstring of ``obj``, if it has one.

        Args:
            obj: The module, class, function or attribute griffe has loaded.
            **kwargs: Griffe's other arguments, unused.
        """
        if obj.docstring is not None:
            obj.docstring.value = _EXAMPLE.sub("Examples:", obj.docstring.value)
