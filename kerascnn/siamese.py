"""Siamese face embeddings: the embedding tower and the models that train it.

One tower, four ways to train it:

- **online triplets** (FaceNet): the tower itself, ``tower.compile(loss=TripletLoss(...))`` and
  ``tower.fit(images, labels)`` on P x K batches (:mod:`kerascnn.data.pk`);
- **offline triplets**: :func:`build_triplet_model`, inputs ``anchor``, ``positive``,
  ``negative`` through the same tower, hinge loss added by a :class:`TripletMarginLoss` layer;
- **pairs**: :func:`build_pair_model`, inputs ``left`` and ``right``, a learned similarity
  ``sigmoid(sum_k w_k |f(x1)_k - f(x2)_k| + b)`` (binary cross-entropy, Koch et al. 2015) or the
  distance (for :class:`kerascnn.losses.ContrastiveLoss`);
- **classification with an angular margin**: :func:`build_arcface_model` (ArcFace).

Each training model holds the tower as one nested layer; :func:`extract_tower` returns it, with
the trained weights, to embed images.

Example:
    >>> from kerascnn.siamese import build_embedding_model, build_triplet_model, extract_tower
    >>> tower = build_embedding_model("resnet18", (112, 112, 3), embedding_dim=128, pooling="gem")
    >>> model = build_triplet_model(tower, margin=0.2)
    >>> model.compile("adam")
    >>> model.fit({"anchor": a, "positive": p, "negative": n}, epochs=5)
    >>> embedder = extract_tower(model)
"""

from __future__ import annotations

from typing import Sequence

import keras
from keras import layers, ops

from kerascnn.layers import GeneralizedMeanPooling2D
from kerascnn.models.base import single_nested_model
from kerascnn.losses import DISTANCES, ArcFaceHead, check_choice, paired_distances

POOLINGS = ("avg", "max", "gem")


def _pooling_layer(pooling: str):
    if pooling == "avg":
        return layers.GlobalAveragePooling2D(name="avg_pool")
    if pooling == "max":
        return layers.GlobalMaxPooling2D(name="max_pool")
    return GeneralizedMeanPooling2D(name="gem_pool")


def build_embedding_model(
    backbone: str | keras.Model,
    input_shape: Sequence[int] | None = None,
    embedding_dim: int = 128,
    pooling: str = "avg",
    dropout: float = 0.0,
    weights: str | None = None,
    name: str = "embedding_model",
) -> keras.Model:
    """An embedding tower: backbone -> pooling -> (dropout) -> Dense -> UnitNormalization.

    The backbone is one nested layer (named after it), so it can be frozen or fine-tuned as a
    whole (``model.get_layer(backbone_name)``). The output is float32 under mixed precision.
    Inputs are what the backbone expects: registry backbones take images normalised with their
    family's mode (``model_info(name).preprocessing``, applied by
    ``make_dataset(preprocessing=name)``).

    Args:
        backbone: a registry name (built with ``include_top=False``) or any ``keras.Model``
            whose output is a 4-D feature map (pooled here) or already a 2-D vector.
        input_shape: ``(height, width, channels)``; required for a registry name, ignored
            (taken from the model) for a ``keras.Model``.
        embedding_dim: size of the unit-norm embedding.
        pooling: ``"avg"``, ``"max"`` or ``"gem"`` (generalized mean, learned exponent).
        dropout: dropout rate before the embedding layer.
        weights: backbone weights for a registry name (``None``, ``"imagenet"`` or a file).
        name: the model name.

    Returns:
        The ``keras.Model``: images in, ``(batch, embedding_dim)`` unit vectors out.

    Raises:
        ValueError: bad ``pooling``, ``embedding_dim``, ``dropout``, a missing ``input_shape``
            or a backbone that is neither a name nor a model.
        UnknownModelError: an unknown registry name.
        InputShapeError: an input the backbone cannot take.
    """
    check_choice("pooling", pooling, POOLINGS)
    if embedding_dim < 1:
        raise ValueError(f"embedding_dim must be >= 1, got {embedding_dim}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    if isinstance(backbone, str):
        if input_shape is None:
            raise ValueError(f"input_shape is required to build the registry backbone {backbone!r}")
        from kerascnn.models.registry import create_model

        backbone = create_model(backbone, include_top=False, weights=weights, input_shape=tuple(input_shape))
    elif not isinstance(backbone, keras.Model):
        raise ValueError(f"backbone must be a registry name or a keras.Model, got {type(backbone).__name__}")
    inputs = keras.Input(backbone.input_shape[1:], name="image")
    x = backbone(inputs)
    if len(x.shape) == 4:
        x = _pooling_layer(pooling)(x)
    elif len(x.shape) != 2:
        raise ValueError(f"the backbone must output (batch, h, w, c) or (batch, c), got {tuple(x.shape)}")
    if dropout:
        x = layers.Dropout(dropout, name="dropout")(x)
    x = layers.Dense(embedding_dim, name="embedding")(x)
    outputs = layers.UnitNormalization(name="l2_normalize", dtype="float32")(x)
    return keras.Model(inputs, outputs, name=name)


def _tower_inputs(tower: keras.Model, names: Sequence[str]) -> list:
    if not isinstance(tower, keras.Model):
        raise ValueError(f"tower must be a keras.Model, got {type(tower).__name__}")
    return [keras.Input(tower.input_shape[1:], name=n) for n in names]


@keras.saving.register_keras_serializable(package="kerascnn")
class TripletMarginLoss(layers.Layer):
    """Offline triplet loss layer: ``[anchor, positive, negative]`` embeddings -> ``(batch, 2)``.

    Outputs ``[d(a, p), d(a, n)]`` per triplet and adds the loss
    ``mean(max(d(a, p) - d(a, n) + margin, 0))`` with ``add_loss``, so a model ending in it
    trains with ``compile(optimizer)`` and ``fit(x)`` (no targets). Float32.

    Args:
        margin: the margin, in units of ``distance``.
        distance: ``"squared_euclidean"``, ``"euclidean"`` or ``"cosine"``.
    """

    def __init__(self, margin: float = 0.2, distance: str = "squared_euclidean", **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if margin < 0:
            raise ValueError(f"margin must be >= 0, got {margin}")
        self.margin = float(margin)
        self.distance = check_choice("distance", distance, DISTANCES)

    def call(self, inputs):
        anchor, positive, negative = inputs
        d_ap = paired_distances(anchor, positive, self.distance)
        d_an = paired_distances(anchor, negative, self.distance)
        self.add_loss(ops.mean(ops.relu(d_ap - d_an + self.margin)))
        return ops.stack([d_ap, d_an], axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], 2)

    def get_config(self) -> dict:
        return {**super().get_config(), "margin": self.margin, "distance": self.distance}


@keras.saving.register_keras_serializable(package="kerascnn")
class L1SimilarityHead(layers.Layer):
    """Learned pair similarity ``sigmoid(sum_k w_k |x1_k - x2_k| + b)`` (Koch et al. 2015).

    ``[x1, x2]`` -> ``(batch, 1)`` probability that the pair is of one identity; train with
    binary cross-entropy. ``w`` and ``b`` start at 0 (the probability starts at 1/2). Float32.
    """

    def __init__(self, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)

    def build(self, input_shape):
        dim = input_shape[0][-1]
        self.kernel = self.add_weight(shape=(dim, 1), initializer="zeros", name="kernel")
        self.bias = self.add_weight(shape=(1,), initializer="zeros", name="bias")

    def call(self, inputs):
        a, b = (ops.cast(t, "float32") for t in inputs)
        return ops.sigmoid(ops.matmul(ops.abs(a - b), self.kernel) + self.bias)

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], 1)


@keras.saving.register_keras_serializable(package="kerascnn")
class PairDistance(layers.Layer):
    """``[x1, x2]`` -> ``(batch, 1)`` distance, zero-safe, float32 (for ContrastiveLoss).

    Args:
        distance: ``"euclidean"``, ``"squared_euclidean"`` or ``"cosine"``.
    """

    def __init__(self, distance: str = "euclidean", **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.distance = check_choice("distance", distance, DISTANCES)

    def call(self, inputs):
        return paired_distances(inputs[0], inputs[1], self.distance)[:, None]

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], 1)

    def get_config(self) -> dict:
        return {**super().get_config(), "distance": self.distance}


def build_triplet_model(
    tower: keras.Model, margin: float = 0.2, distance: str = "squared_euclidean", name: str = "triplet_model"
) -> keras.Model:
    """The offline triplet formulation: ``anchor``, ``positive``, ``negative`` through one tower.

    Train with ``model.compile(optimizer)`` (the loss is added by :class:`TripletMarginLoss`)
    and ``model.fit({"anchor": a, "positive": p, "negative": n})`` (or a ``tf.data`` dataset of
    such dicts). The output is ``[d(a, p), d(a, n)]`` per triplet.

    Args:
        tower: the embedding model (e.g. :func:`build_embedding_model`); shared, not copied.
        margin: the margin.
        distance: ``"squared_euclidean"``, ``"euclidean"`` or ``"cosine"``.
        name: the model name.

    Returns:
        The ``keras.Model``; :func:`extract_tower` gives the tower back.

    Raises:
        ValueError: ``tower`` is not a model, or bad ``margin`` / ``distance``.
    """
    inputs = _tower_inputs(tower, ("anchor", "positive", "negative"))
    embeddings = [tower(x) for x in inputs]
    outputs = TripletMarginLoss(margin, distance, name="triplet_loss")(embeddings)
    return keras.Model(inputs, outputs, name=name)


def build_pair_model(tower: keras.Model, head: str = "sigmoid", distance: str = "euclidean", name: str = "pair_model") -> keras.Model:
    """The pair formulation: ``left`` and ``right`` images through one tower.

    Args:
        tower: the embedding model; shared, not copied.
        head: ``"sigmoid"``: the learned :class:`L1SimilarityHead`, output the probability of
            "same", train with ``loss="binary_crossentropy"`` on labels 1 (same) / 0;
            ``"distance"``: output the :class:`PairDistance`, train with
            :class:`kerascnn.losses.ContrastiveLoss`.
        distance: the distance of the ``"distance"`` head.
        name: the model name.

    Returns:
        The ``keras.Model`` (inputs ``left``, ``right``; output ``(batch, 1)``).

    Raises:
        ValueError: ``tower`` is not a model, or bad ``head`` / ``distance``.
    """
    check_choice("head", head, ("sigmoid", "distance"))
    left, right = _tower_inputs(tower, ("left", "right"))
    pair = [tower(left), tower(right)]
    if head == "sigmoid":
        outputs = L1SimilarityHead(name="similarity")(pair)
    else:
        outputs = PairDistance(distance, name="distance")(pair)
    return keras.Model([left, right], outputs, name=name)


def build_arcface_model(
    tower: keras.Model, num_classes: int, scale: float = 30.0, margin: float = 0.5, name: str = "arcface_model"
) -> keras.Model:
    """Identity classification with an additive angular margin (ArcFace) to train the tower.

    Inputs ``image`` and ``label`` (the label sets the margin on its logit), output the
    :class:`kerascnn.losses.ArcFaceHead` logits. Train with
    ``compile(loss=SparseCategoricalCrossentropy(from_logits=True))`` and
    ``fit({"image": x, "label": y}, y)``; then :func:`extract_tower`.

    Args:
        tower: the embedding model; shared, not copied.
        num_classes: number of training identities.
        scale, margin: of :class:`~kerascnn.losses.ArcFaceHead`.
        name: the model name.

    Returns:
        The ``keras.Model``.
    """
    (image,) = _tower_inputs(tower, ("image",))
    label = keras.Input((), dtype="int32", name="label")
    logits = ArcFaceHead(num_classes, scale, margin, name="arcface")([tower(image), label])
    return keras.Model([image, label], logits, name=name)


def extract_tower(model: keras.Model) -> keras.Model:
    """The shared embedding tower of a triplet, pair or ArcFace model (with its trained weights).

    Raises:
        ValueError: ``model`` has no nested model, or more than one.
    """
    return single_nested_model(model, "embedding model")
