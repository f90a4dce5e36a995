"""Fused face models: several embedders, each with its own alignment, as ONE face model.

A fused model is a multi-input Keras model: input ``i`` takes member ``i``'s aligned crops (its
own template, its own size), and the output is the concatenation of ``sqrt(a_i) *
unit_embedding_i`` (:class:`kerascnn.layers.WeightedConcatenation`; ``a_i >= 0``, summing to 1).
The output is a unit vector and the cosine of two fused templates is exactly the weighted mean
of the members' cosines, so verification, identification (the gallery's exact matmul search),
calibration and the gallery's model identity treat it as one model, and each member's template
is a slice of the stored vector (:func:`member_embeddings`).

Its card says how to feed it, under ``"members"``, in the order of the model's inputs::

    "members": [{"name": "dlib", "model": "dlib", "input": "dlib_image", "size": 150,
                 "embedding_dim": 128, "slice": [0, 128], "weight": 0.6,
                 "alignment": {...the member's template...}, "weights_sha256": "..."}, ...]

:class:`kerascnn.face.pipeline.FacePipeline` aligns one crop per member input from the same
detection. :func:`build_fused_model` writes a fused model from member face models.

Example:
    >>> from kerascnn.face.ensemble import build_fused_model
    >>> build_fused_model(["dlib", "small"], [0.7, 0.3], "fused.keras")   # doctest: +SKIP
    >>> FacePipeline(model="fused.keras").embed_one("alice.jpg")           # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

import keras
import numpy as np

from kerascnn.errors import FaceModelError
from kerascnn.face.align import DEFAULT_TEMPLATE, AlignmentTemplate
from kerascnn.face.model import alignment_of, card_path, inference_card, load_face_model, update_card
from kerascnn.layers import WeightedConcatenation


def _member_key(spec) -> str:
    """A member's short name: the shipped model's name, else the model file's stem."""
    text = os.fspath(spec)
    return Path(text).stem if text.endswith(".keras") or os.sep in text else text


def fused_network(models: Sequence[keras.Model], weights: Sequence[float], names: Sequence[str],
                  name: str = "fused") -> keras.Model:
    """The fused Keras model of member embedders (see the module docstring).

    Args:
        models: the member embedders, each ``(batch, s, s, 3)`` images to ``(batch, d)`` vectors.
        weights: one fusion weight per member, ``>= 0``, not all zero (normalised to sum 1).
        names: one unique name per member; input ``i`` is ``<names[i]>_image``.
        name: the fused model's name.

    Returns:
        A Keras model with one input per member and the concatenated weighted unit embeddings out.

    Raises:
        ValueError: fewer than two members, counts that differ, repeated names, or bad weights.
    """
    if len(models) < 2 or not len(models) == len(weights) == len(names):
        raise ValueError(f"a fused model needs two or more members with one weight and one name each, got "
                         f"{len(models)} models, {len(weights)} weights, {len(names)} names")
    if len(set(names)) != len(names):
        raise ValueError(f"the members' names must differ, got {list(names)}")
    inputs, embeddings = [], []
    for member, key in zip(models, names):
        image = keras.Input(tuple(member.inputs[0].shape[1:]), name=f"{key}_image")
        wrapped = keras.Model(member.inputs[0], member.outputs[0], name=key)  # a unique name for the nested model
        inputs.append(image)
        embeddings.append(wrapped(image))
    fused = WeightedConcatenation(weights, name="fusion")(embeddings)
    return keras.Model(inputs, fused, name=name)


def build_fused_model(members: Sequence[str | os.PathLike], weights: Sequence[float], out: str | os.PathLike,
                      card: dict | None = None, name: str = "fused") -> Path:
    """Write a fused face model (``.keras`` + card) of face models given by name or path.

    Each member's alignment template comes from its card; the fused card takes the first
    member's ``test_time_flip`` and ``box_scales`` (they apply to every member's crops of a face).

    Args:
        members: two or more face models (shipped names or ``.keras`` paths), each with a card
            (or the default template when it has none).
        weights: one fusion weight per member, ``>= 0`` (normalised to sum 1): the cosine of two
            fused templates is ``sum_i a_i cos_i``.
        out: the ``.keras`` file to write (its card beside it, replaced).
        card: more card entries (calibrations, figures, provenance).
        name: the Keras model's name (the gallery's model identity and calibration files use it).

    Returns:
        The written model's path.

    Raises:
        FaceModelError: a member that cannot be loaded, or a malformed member card.
        ValueError: fewer than two members, repeated member names, or bad weights.
    """
    from kerascnn.face.gallery.records import model_identity

    out = Path(out)
    models = [load_face_model(spec) for spec in members]
    cards = [inference_card(spec) for spec in members]
    names = [_member_key(spec) for spec in members]
    model = fused_network(models, weights, names, name)
    fusion = model.get_layer("fusion").fusion_weights
    entries, start = [], 0
    for spec, key, member, member_card, weight in zip(members, names, models, cards, fusion):
        dim = int(member.outputs[0].shape[-1])
        entries.append({
            "name": key, "model": os.fspath(spec), "input": f"{key}_image", "size": int(member.inputs[0].shape[1]),
            "embedding_dim": dim, "slice": [start, start + dim], "weight": weight,
            "alignment": alignment_of(member_card, str(card_path(spec))).to_dict(),
            "weights_sha256": model_identity(member)["weights_sha256"],
        })
        start += dim
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.keras")
    model.save(tmp)
    os.replace(tmp, out)
    card_path(out).unlink(missing_ok=True)
    update_card(out, {
        "model": out.name, "kind": "fused",
        "architecture": "fused: " + " + ".join(f"{e['name']} ({e['size']}x{e['size']}, {e['embedding_dim']}-d, "
                                              f"weight {e['weight']:.4g})" for e in entries),
        "parameters": int(model.count_params()),
        "members": entries,
        "output": {"embedding_dim": start, "unit_norm": True, "metric": "cosine",
                   "fusion": "concatenation of sqrt(weight_i) * unit embedding_i: cosine = sum_i weight_i cosine_i"},
        "test_time_flip": cards[0].get("test_time_flip", "none"), "box_scales": cards[0].get("box_scales", []),
        **(card or {}),
    })
    return out


def _members_of(card: dict, where: str) -> list[dict]:
    members = card.get("members")
    if not isinstance(members, list) or not all(isinstance(m, dict) for m in members):
        raise FaceModelError(f"model card {where}: a fused model's card needs a 'members' list (one entry per input)")
    return members


def member_crops(model: keras.Model, card: dict, alignment: Sequence[AlignmentTemplate] | None = None,
                 where: str = "the model card") -> list[tuple[int, AlignmentTemplate]]:
    """The crop of each input of a fused model: ``(size, alignment template)``, in input order.

    Args:
        model: the fused Keras model.
        card: its card (``{}`` when it has none: every member then gets the default template).
        alignment: one template per input, overriding the card's.
        where: the card's path, for messages.

    Returns:
        One ``(size, template)`` per model input.

    Raises:
        FaceModelError: a card whose ``members`` do not match the model's inputs, or a malformed
            member template; ``alignment`` of the wrong length.
    """
    sizes = [int(x.shape[1]) for x in model.inputs]
    if any(int(x.shape[2]) != size or x.shape[-1] != 3 for x, size in zip(model.inputs, sizes)):
        raise FaceModelError(f"a fused model's inputs must be square RGB crops, got {[tuple(x.shape) for x in model.inputs]}")
    if alignment is not None:
        templates = list(alignment) if not isinstance(alignment, AlignmentTemplate) else [alignment]
    elif card:
        members = _members_of(card, where)
        inputs = [x.name for x in model.inputs]
        if [m.get("input") for m in members] != inputs:
            raise FaceModelError(f"model card {where}: its members' inputs {[m.get('input') for m in members]} "
                                 f"are not the model's inputs {inputs}")
        templates = [alignment_of(m, f"{where} (member {m.get('name')!r})") for m in members]
    else:
        templates = [DEFAULT_TEMPLATE] * len(sizes)
    if len(templates) != len(sizes):
        raise FaceModelError(f"a fused model of {len(sizes)} inputs needs {len(sizes)} alignment templates, "
                             f"got {len(templates)}")
    return list(zip(sizes, templates))


def member_embeddings(card: dict, vectors: np.ndarray) -> dict[str, np.ndarray]:
    """Each member's unit embeddings, from fused templates: the slices of the stored vectors,
    scaled to unit length (exactly the member's own pipeline's embeddings, test-time flip included).

    Args:
        card: the fused model's card.
        vectors: ``(n, d)`` fused templates (rows of NaN stay NaN).

    Returns:
        ``{member name: (n, d_i) unit vectors}``, in the card's order.

    Raises:
        FaceModelError: a card without members, a member of weight 0 (its slice is zeros), or
            slices that do not fit the vectors.
    """
    from kerascnn.evaluation import unit_vectors

    vectors = np.asarray(vectors, np.float32)
    out = {}
    for member in _members_of(card, "of the fused model"):
        start, stop = member.get("slice", (None, None))
        weight = member.get("weight", 0)
        if not (isinstance(start, int) and isinstance(stop, int) and 0 <= start < stop <= vectors.shape[-1]) \
                or not (isinstance(weight, (int, float)) and weight > 0 and math.isfinite(weight)):
            raise FaceModelError(f"fused model card: member {member.get('name')!r} has no usable slice and weight "
                                 f"(> 0) for vectors of dimension {vectors.shape[-1]}: slice {member.get('slice')}, "
                                 f"weight {weight}")
        out[str(member["name"])] = unit_vectors(vectors[:, start:stop])
    return out


def fit_fusion_weights(genuine: np.ndarray, impostor: np.ndarray, target_far: float = 1e-3,
                       steps: int = 101) -> tuple[np.ndarray, float]:
    """The fusion weights of highest true accept rate at a false accept rate, by grid search.

    The fused score of a pair is ``sum_i a_i cos_i`` (:class:`kerascnn.layers.WeightedConcatenation`);
    every ``a`` on a grid of the simplex (step ``1 / (steps - 1)``) is scored by its TAR at the
    threshold that accepts at most ``target_far`` of the impostor pairs. Among equally good
    weights, the one nearest their mean is kept (the middle of a plateau).

    Args:
        genuine: ``(n_genuine, m)`` the members' cosines of genuine pairs.
        impostor: ``(n_impostor, m)`` the members' cosines of impostor pairs (at least
            ``1 / target_far`` of them for the rate to mean anything).
        target_far: the false accept rate.
        steps: grid points per member weight (``m = 2``: ``steps`` candidates).

    Returns:
        ``(weights (m,) summing to 1, their TAR)``.

    Raises:
        ValueError: arrays of different member counts, fewer than two members, or no pairs.
    """
    import itertools

    genuine, impostor = np.asarray(genuine, np.float32), np.asarray(impostor, np.float32)
    m = genuine.shape[-1]
    if genuine.ndim != 2 or impostor.ndim != 2 or impostor.shape[1] != m or m < 2 or not len(genuine) \
            or not len(impostor):
        raise ValueError(f"fit_fusion_weights needs (n, m) member cosines of genuine and impostor pairs, m >= 2, "
                         f"got {genuine.shape} and {impostor.shape}")
    grid = np.array([c + (steps - 1 - sum(c),) for c in itertools.product(range(steps), repeat=m - 1)
                     if sum(c) <= steps - 1], np.float32) / (steps - 1)
    accepted = max(int(np.floor(target_far * len(impostor))), 0)  # impostors that may score above the threshold
    tars = np.empty(len(grid))
    for i, a in enumerate(grid):
        fused = impostor @ a
        # the threshold sits above the (accepted + 1)-th highest impostor score
        limit = np.partition(fused, len(fused) - accepted - 1)[len(fused) - accepted - 1]
        tars[i] = np.mean(genuine @ a > limit)
    best = np.flatnonzero(tars == tars.max())
    centre = grid[best].mean(0)
    pick = best[np.argmin(np.linalg.norm(grid[best] - centre, axis=1))]
    return grid[pick].astype(np.float64), float(tars[pick])
