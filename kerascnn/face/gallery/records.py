"""What a gallery holds and checks: model identities, records, and the validation of names and templates.

Plain NumPy, the standard library and Unicode's confusables data (``confusable_homoglyphs``): no
store, no search, no TensorFlow.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable, Sequence

import numpy as np

from kerascnn.errors import ConfusableNameError, GalleryCorruptError, GalleryInputError

MAX_NAME_LENGTH = 256
IDENTITY_FIELDS = ("name", "input_size", "embedding_dim", "weights_sha256", "options_sha256")
# the fields every identity has; options_sha256 is missing from those of galleries and exports made
# before kerascnn recorded template options, and is then not compared
REQUIRED_IDENTITY_FIELDS = IDENTITY_FIELDS[:4]
PREPROCESSING_KEYS = ("scale", "offset", "mean", "variance")  # in-model input scaling, not among the weights


# --- model identity --------------------------------------------------------------------------
def model_identity(model: Any, options: dict | None = None) -> dict:
    """The identity of an embedding model, as a gallery stores it: two models share it only when
    they make the same templates of the same faces.

    Args:
        model: a Keras model taking images ``(batch, h, w, c)`` and returning ``(batch, d)``
            embeddings.
        options: what shapes the templates besides the model (a face pipeline's
            ``template_options``: alignment template, crop size, test-time flip, box scales,
            where they differ from those of a model without card); ``None`` for none.

    Returns:
        ``{"name", "input_size": [h, w, c], "embedding_dim": d, "weights_sha256",
        "options_sha256"}``: ``weights_sha256`` is the sha256 of every weight's bytes, in the
        model's weight order; ``options_sha256`` that of ``options`` and of the constants of the
        model's own input scaling (``Rescaling``, ``Normalization``: not among its weights), as
        canonical JSON.
    """
    digest = hashlib.sha256()
    for weight in model.weights:
        value = weight.numpy() if hasattr(weight, "numpy") else weight
        digest.update(np.ascontiguousarray(value).tobytes())
    preprocessing = []
    for layer in getattr(model, "layers", []):
        if type(layer).__name__ in ("Rescaling", "Normalization"):
            config = layer.get_config()
            preprocessing.append({key: config[key] for key in PREPROCESSING_KEYS if key in config})
    described = json.dumps({"options": options or {}, "preprocessing": preprocessing}, sort_keys=True,
                           default=lambda value: np.asarray(value).tolist())
    input_shape = model.inputs[0].shape if getattr(model, "inputs", None) else model.input_shape
    return {
        "name": str(model.name),
        "input_size": [None if s is None else int(s) for s in tuple(input_shape)[1:]],
        "embedding_dim": int(model.outputs[0].shape[-1]),
        "weights_sha256": digest.hexdigest(),
        "options_sha256": hashlib.sha256(described.encode()).hexdigest(),
    }


def pipeline_identity(pipeline: Any) -> dict:
    """The :func:`model_identity` of the templates a face pipeline makes: its ``model`` and its
    ``template_options`` (none for a pipeline without them); a pipeline's own cached ``identity``
    where it has one."""
    cached = getattr(pipeline, "identity", None)
    if isinstance(cached, dict):
        return cached
    return model_identity(pipeline.model, getattr(pipeline, "template_options", None))


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes (the source image hash stored with each template)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --- records ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class IdentityInfo:
    """One enrolled identity: its name, number of templates and creation time (ISO 8601, UTC)."""

    name: str
    templates: int
    created: str

    def to_dict(self) -> dict:
        return {"name": self.name, "templates": self.templates, "created": self.created}


@dataclass
class EnrollReport:
    """What an enrollment did.

    Attributes:
        enrolled: templates added per identity name.
        skipped: images whose source hash was already enrolled for that identity.
        failures: ``(image path, error message)`` of images that gave no embedding.
    """

    enrolled: dict[str, int] = field(default_factory=dict)
    skipped: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)

    @property
    def templates(self) -> int:
        return sum(self.enrolled.values())

    def to_dict(self) -> dict:
        return {
            "enrolled": dict(self.enrolled),
            "templates": self.templates,
            "skipped": self.skipped,
            "failures": [{"path": p, "error": e} for p, e in self.failures],
        }


# --- checks and conversions --------------------------------------------------------------------
def now() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def short(value: Any) -> str:
    """``value`` as JSON, cut to about 24 characters (for messages)."""
    text = json.dumps(value)
    return text if len(text) <= 24 else text[:20] + "...\""


def is_sha256(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def check_identity_dict(identity: Any) -> dict:
    """``identity`` if it is a :func:`model_identity` dict; GalleryInputError otherwise."""
    if not isinstance(identity, dict) or any(key not in identity for key in REQUIRED_IDENTITY_FIELDS):
        raise GalleryInputError(
            f"model identity must be a dict with keys {', '.join(REQUIRED_IDENTITY_FIELDS)} (see model_identity()), "
            f"got {identity!r:.200}"
        )
    return identity


def check_name(name: Any) -> str:
    """``name`` normalised to Unicode NFC, without surrounding whitespace, if it is a valid identity
    name; GalleryInputError otherwise.

    Every gallery entry point that takes a name (enroll, rename, remove, verify, import, lookups)
    goes through here, so "René" typed in NFC or NFD is one identity, and so are "  bob " and
    "bob". Control (Cc) and format (Cf) characters (newlines, C1 controls, zero-width and
    right-to-left override characters) are refused, the message naming the code point.
    """
    if not isinstance(name, str):
        raise GalleryInputError(f"identity name must be a string, got {type(name).__name__}")
    name = unicodedata.normalize("NFC", name)
    if not name:
        raise GalleryInputError("identity name is empty: give a name of 1 to "
                                f"{MAX_NAME_LENGTH} printable characters")
    if not name.strip():
        raise GalleryInputError(f"identity name {name!r} is blank: give a name with a visible character")
    name = name.strip()
    if len(name) > MAX_NAME_LENGTH:
        raise GalleryInputError(f"identity name must be 1 to {MAX_NAME_LENGTH} characters, got {len(name)}: "
                                f"{name!r:.100}")
    for c in name:
        kind = unicodedata.category(c)
        if kind in ("Cc", "Cf"):
            what = "a control character" if kind == "Cc" else "an invisible format character"
            raise GalleryInputError(f"identity name {name!r:.300} contains {_code_point(c)}, {what}: names must be "
                                    "printable")
    return name


def _code_point(char: str) -> str:
    """``"U+0430 (CYRILLIC SMALL LETTER A)"``: a character's code point and Unicode name (for messages)."""
    label = unicodedata.name(char, "")
    return f"U+{ord(char):04X}{f' ({label})' if label else ''}"


@functools.cache
def _prototypes() -> dict[str, str]:
    """Unicode's confusables table (UTS #39 ``confusables.txt``) as ``{character: prototype}``.

    ``confusable_homoglyphs`` keeps the table as links both ways (a character and its prototype
    list each other) and wraps right-to-left characters in U+200E marks: the marks are dropped, a
    character with one link that is a sequence or a shared prototype maps to it, and of two
    characters linked only to each other the larger maps to the smaller (either way, the two
    then have one skeleton, which is all a comparison of skeletons needs).
    """
    from confusable_homoglyphs.confusables import confusables_data

    links = {key.replace("\u200e", ""): [e["c"].replace("\u200e", "") for e in entries]
             for key, entries in confusables_data.items()}
    prototypes = {char: other for char, (other, *more) in links.items()
                  if len(char) == 1 and not more and (len(other) > 1 or len(links[other]) > 1 or other < char)}
    return {char: "".join(prototypes.get(c, c) for c in target) for char, target in prototypes.items()}


@functools.lru_cache(maxsize=1 << 16)
def name_skeleton(name: str) -> str:
    """The UTS #39 skeleton of ``name``: NFD, every character replaced by its prototype in
    Unicode's confusables table, NFD again. Names that look alike share it ("аlice" with a Cyrillic
    ``а`` and "alice"; "rn" and "m"); letter case is kept ("Alice" and "alice" differ).

    Args:
        name: any text.

    Returns:
        The skeleton, for comparison only (it is no name to show).
    """
    prototypes = _prototypes()
    return unicodedata.normalize("NFD", "".join(prototypes.get(c, c) for c in unicodedata.normalize("NFD", name)))


def check_not_confusable(names: Iterable[str], enrolled: Iterable[str]) -> None:
    """Refuse new names that look like an enrolled one, or like another new one (the same
    :func:`name_skeleton`).

    Args:
        names: names passed through :func:`check_name`, in the order they are added; an enrolled
            one, or one given twice, is no conflict.
        enrolled: the names already enrolled.

    Raises:
        ConfusableNameError: a name with the skeleton of another name; the message names both and
            their first differing characters.
    """
    enrolled = set(enrolled)
    seen = {name_skeleton(other): other for other in sorted(enrolled)}
    for name in names:
        other = seen.setdefault(name_skeleton(name), name)
        if other == name or name in enrolled:
            continue
        at = next((i for i, (a, b) in enumerate(zip(name, other)) if a != b), min(len(name), len(other)))
        ours, theirs = (_code_point(text[at]) if at < len(text) else "the end" for text in (name, other))
        raise ConfusableNameError(
            f"identity name {name!r:.300} looks like the {'enrolled' if other in enrolled else 'new'} "
            f"{other!r:.300} (the same Unicode confusables skeleton): they differ first at character {at + 1}, "
            f"{ours} against {theirs}; pass --allow-confusable (allow_confusable=True) to enroll both"
        )


def check_embeddings(x: Any, what: str) -> np.ndarray:
    """``(n, d)`` float32 from finite floating-point input; GalleryInputError otherwise."""
    array = np.asarray(x)
    if array.dtype.kind != "f":
        raise GalleryInputError(f"{what} must be floating point, got dtype {array.dtype} with shape {array.shape}")
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise GalleryInputError(f"{what} must have shape (n, d) or (d,) with n, d > 0, got shape {np.shape(x)}")
    if not np.all(np.isfinite(array)):
        bad = np.flatnonzero(~np.all(np.isfinite(array), axis=1))
        raise GalleryInputError(f"{what} of shape {array.shape} contain NaN or infinity (rows {bad[:10].tolist()})")
    array = array.astype(np.float32)
    if np.any(np.linalg.norm(array, axis=1) == 0):
        raise GalleryInputError(f"{what} of shape {array.shape} contain an all-zero vector (no direction to compare)")
    return array


def to_blob(vector: np.ndarray) -> bytes:
    """A template as stored: raw little-endian float32 bytes (never pickled)."""
    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


def from_blob(blob: bytes, dim: int) -> np.ndarray:
    """The float32 template of a stored blob; GalleryCorruptError if it has not ``dim`` values."""
    vector = np.frombuffer(blob, dtype="<f4")
    if dim and vector.size != dim:
        raise GalleryCorruptError(f"a template holds {vector.size} values, the gallery's dimension is {dim}")
    if not np.isfinite(vector).all():
        raise GalleryCorruptError("a stored template holds NaN or infinity (a damaged gallery): remove and "
                                  "re-enroll its identity")
    return vector.astype(np.float32)


def source_digests(sources: Sequence | None, n: int) -> list[str | None]:
    """Per template, the sha256 of its source (file, bytes or ``"sha256:<hex>"``), or None."""
    if sources is None:
        return [None] * n
    sources = list(sources)
    if len(sources) != n:
        raise GalleryInputError(f"got {len(sources)} sources for {n} embeddings")
    digests = []
    for source in sources:
        if source is None:
            digests.append(None)
        elif isinstance(source, bytes):
            digests.append(hashlib.sha256(source).hexdigest())
        elif isinstance(source, str) and source.startswith("sha256:") and is_sha256(source[7:]):
            digests.append(source[7:])
        else:
            digests.append(sha256_file(source))
    return digests
