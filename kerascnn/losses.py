"""Metric-learning losses for face embeddings: triplet (online mining), contrastive, ArcFace.

Every loss takes ``(y_true=labels, y_pred=embeddings)`` so that it trains a one-input embedding
model with a plain ``model.fit(images, labels)`` (the *online* formulation: the triplets are
mined inside each batch, so batches should hold several images per identity, see
:mod:`kerascnn.data.pk`). Computations run in float32 whatever the dtype policy (inputs are
cast), and distances are safe at zero (no NaN gradient of ``sqrt`` at 0).

Example:
    >>> import kerascnn
    >>> from kerascnn.losses import TripletLoss, ActiveTripletFraction
    >>> model = kerascnn.siamese.build_embedding_model("resnet18", (112, 112, 3))
    >>> model.compile("adam", loss=TripletLoss(0.2, mining="semi_hard"),
    ...               metrics=[ActiveTripletFraction(0.2)])
    >>> model.fit(pk_dataset, epochs=10)  # batches of P identities x K images
"""

from __future__ import annotations

import math

import keras
from keras import ops

MININGS = ("batch_all", "batch_hard", "semi_hard")
SEMI_HARD_FALLBACKS = ("farthest", "closest")
DISTANCES = ("squared_euclidean", "euclidean", "cosine")
_SQRT_FLOOR = 1e-12  # squared distances below this count as 0 (value and gradient)


def check_choice(what: str, value: str, choices: tuple[str, ...]) -> str:
    """``value`` if it is one of ``choices``.

    Args:
        what: the argument's name, for the message.
        value: the value given.
        choices: the accepted values.

    Returns:
        ``value``.

    Raises:
        ValueError: ``value`` is not one of ``choices`` (the message lists them).
    """
    if value not in choices:
        raise ValueError(f"{what} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def _l2_normalize(x, axis: int = -1):
    """``x / ||x||`` along ``axis``, with zero vectors left at zero."""
    return x * ops.rsqrt(ops.maximum(ops.sum(ops.square(x), axis=axis, keepdims=True), 1e-12))


def _safe_sqrt(d2):
    """``sqrt`` with value and gradient 0 where ``d2`` is below a tiny floor (no NaN at 0)."""
    positive = d2 > _SQRT_FLOOR
    return ops.where(positive, ops.sqrt(ops.where(positive, d2, 1.0)), 0.0)


def paired_distances(a, b, distance: str = "euclidean"):
    """Row-wise distances ``d(a[i], b[i])`` in float32, zero-safe.

    Args:
        a, b: ``(batch, dim)`` tensors.
        distance: ``"squared_euclidean"``, ``"euclidean"`` or ``"cosine"`` (``1 - cos``).

    Returns:
        ``(batch,)`` float32 tensor.

    Raises:
        ValueError: unknown ``distance``.
    """
    check_choice("distance", distance, DISTANCES)
    a, b = ops.cast(a, "float32"), ops.cast(b, "float32")
    if distance == "cosine":
        return 1.0 - ops.sum(_l2_normalize(a) * _l2_normalize(b), axis=-1)
    d2 = ops.sum(ops.square(a - b), axis=-1)
    return d2 if distance == "squared_euclidean" else _safe_sqrt(d2)


def pairwise_distances(embeddings, distance: str = "squared_euclidean"):
    """All pairwise distances of a batch of embeddings, in float32.

    Args:
        embeddings: ``(batch, dim)`` tensor.
        distance: ``"squared_euclidean"``, ``"euclidean"`` or ``"cosine"`` (``1 - cos``).

    Returns:
        ``(batch, batch)`` float32 tensor with an exact zero diagonal. Euclidean distances have a
        zero (not NaN) gradient where the distance is 0.

    Raises:
        ValueError: unknown ``distance``.
    """
    check_choice("distance", distance, DISTANCES)
    x = ops.cast(embeddings, "float32")
    n = ops.shape(x)[0]
    off_diagonal = 1.0 - ops.eye(n, dtype="float32")
    if distance == "cosine":
        x = _l2_normalize(x)
        return ops.clip(1.0 - ops.matmul(x, ops.transpose(x)), 0.0, 2.0) * off_diagonal
    sq = ops.sum(ops.square(x), axis=1)
    d2 = sq[:, None] - 2.0 * ops.matmul(x, ops.transpose(x)) + sq[None, :]
    d2 = ops.maximum(d2, 0.0) * off_diagonal
    return d2 if distance == "squared_euclidean" else _safe_sqrt(d2)


def _label_masks(labels, n):
    """``(positive, negative)`` boolean ``(n, n)`` masks: same label (not self), other label."""
    labels = ops.reshape(labels, (-1,))
    same = ops.equal(labels[:, None], labels[None, :])
    not_self = ops.logical_not(ops.cast(ops.eye(n), "bool"))
    return ops.logical_and(same, not_self), ops.logical_not(same)


def _masked_terms(values, mask):
    """``(values where mask else 0, max(#mask, 1))``: the parts of a mean over ``mask`` that is 0
    (with zero gradients) when the mask is empty."""
    mask = ops.cast(mask, "float32")
    return values * mask, ops.maximum(ops.sum(mask), 1.0)


def _hinge(x, margin: float, soft_margin: bool):
    return ops.softplus(x) if soft_margin else ops.relu(x + margin)


def triplet_loss(
    labels,
    embeddings,
    margin: float = 0.2,
    mining: str = "batch_all",
    distance: str = "squared_euclidean",
    soft_margin: bool = False,
    semi_hard_fallback: str = "farthest",
):
    """The triplet loss of a batch with online mining (the function behind :class:`TripletLoss`).

    A triplet ``(a, p, n)`` is valid when ``a != p``, ``label[a] == label[p]`` and
    ``label[a] != label[n]``; its loss is ``max(d(a, p) - d(a, n) + margin, 0)``, or
    ``softplus(d(a, p) - d(a, n))`` with ``soft_margin`` (Hermans et al. 2017; ``margin`` is then
    not used).

    - ``batch_all``: the mean over the valid triplets whose loss is positive (Hermans et al.).
    - ``batch_hard`` (Hermans et al.; tensorflow-addons' ``TripletHardLoss``): per anchor, its
      farthest positive and its closest negative; the mean over the anchors that have both
      (in P x K batches, every anchor; tensorflow-addons also averages in anchors without a
      positive, with a positive distance of 0).
    - ``semi_hard`` (FaceNet, Schroff et al. 2015), with tensorflow-addons'
      ``TripletSemiHardLoss`` semantics: per anchor-positive pair, the closest negative that is
      farther than the positive (``d(a, n) > d(a, p)``: those within the margin give a loss, the
      others none); when no negative is farther than the positive, the *farthest* negative
      (``semi_hard_fallback="farthest"``, tensorflow-addons' choice: FaceNet avoids the hardest
      negatives, which can collapse the model early in training) or the closest one
      (``"closest"``, kerascnn's behaviour before 2026-11). The mean over every anchor-positive
      pair (a batch of one identity has no negative and gives 0, where tensorflow-addons gives
      the margin plus the mean positive distance).

    ``distance="squared_euclidean"`` is tensorflow-addons' ``distance_metric="L_2"`` (its
    ``pairwise_distance(squared=True)``) and ``"cosine"`` its ``"angular"`` (``1 - cos``), so
    ``TripletLoss(1.0, "semi_hard")`` computes ``TripletSemiHardLoss()`` and
    ``TripletLoss(1.0, "batch_hard", soft_margin=s)`` ``TripletHardLoss(soft=s)`` (on batches
    where every anchor has a positive).

    A batch with no valid triplet (one identity, or all identities distinct) gives 0 with zero
    gradients. Cost for a batch of ``n``: ``O(n^2)`` memory; ``batch_hard`` ``O(n^2)`` time,
    ``batch_all`` and ``semi_hard`` ``O(n^2 log n)`` (sorted negative distances and prefix
    sums), except ``batch_all`` with ``soft_margin``, which enumerates the ``n^3`` triplets.

    Args:
        labels: ``(batch,)`` or ``(batch, 1)`` integer identity labels.
        embeddings: ``(batch, dim)`` embeddings (any float dtype; computed in float32).
        margin: the margin (in units of ``distance``).
        mining: ``"batch_all"``, ``"batch_hard"`` or ``"semi_hard"``.
        distance: ``"squared_euclidean"``, ``"euclidean"`` or ``"cosine"``.
        soft_margin: softplus instead of the hinge.
        semi_hard_fallback: ``"farthest"`` or ``"closest"``: the negative ``semi_hard`` uses
            when none is farther than the positive.

    Returns:
        A float32 scalar.

    Raises:
        ValueError: unknown ``mining``, ``distance`` or ``semi_hard_fallback``.
    """
    per_anchor, normalizer = triplet_terms(
        labels, embeddings, margin, mining, distance, soft_margin, semi_hard_fallback
    )
    return ops.sum(per_anchor) / normalizer


def triplet_terms(
    labels,
    embeddings,
    margin: float = 0.2,
    mining: str = "batch_all",
    distance: str = "squared_euclidean",
    soft_margin: bool = False,
    semi_hard_fallback: str = "farthest",
):
    """The triplet loss of a batch split by anchor: ``loss = sum(per_anchor) / normalizer``.

    Args:
        labels, embeddings, margin, mining, distance, soft_margin, semi_hard_fallback: as
            :func:`triplet_loss`.

    Returns:
        ``(per_anchor, normalizer)``: a ``(batch,)`` float32 tensor, each anchor's summed terms,
        and a float32 scalar >= 1, the number of terms :func:`triplet_loss` averages over.

    Raises:
        ValueError: unknown ``mining``, ``distance`` or ``semi_hard_fallback``.
    """
    check_choice("mining", mining, MININGS)
    check_choice("semi_hard_fallback", semi_hard_fallback, SEMI_HARD_FALLBACKS)
    d = pairwise_distances(embeddings, distance)
    n = ops.shape(d)[0]
    pos, neg = _label_masks(labels, n)
    if mining == "batch_hard":
        hardest_pos = ops.max(ops.where(pos, d, 0.0), axis=1)
        far = ops.stop_gradient(ops.max(d) + 1.0)
        hardest_neg = ops.min(ops.where(neg, d, far), axis=1)
        valid = ops.logical_and(ops.any(pos, axis=1), ops.any(neg, axis=1))
        return _masked_terms(_hinge(hardest_pos - hardest_neg, margin, soft_margin), valid)
    if mining == "batch_all" and soft_margin:  # softplus has no prefix-sum shortcut: O(n^3)
        valid = ops.logical_and(pos[:, :, None], neg[:, None, :])
        terms, count = _masked_terms(ops.softplus(d[:, :, None] - d[:, None, :]), valid)
        return ops.sum(terms, axis=(1, 2)), count
    # each anchor's negative distances sorted (non-negatives pushed past every threshold)
    far = ops.stop_gradient(ops.max(d)) + margin + 1.0
    sorted_neg = ops.sort(ops.where(neg, d, far), axis=1)
    posf = ops.cast(pos, "float32")
    if mining == "batch_all":
        # per (a, p): c = #negatives with d(a, n) < d(a, p) + margin and the sum S of their
        # distances; the pair's summed hinge is c * (d(a, p) + margin) - S. O(n^2 log n).
        threshold = d + margin
        count = _count_below(sorted_neg, threshold)
        prefix = ops.pad(ops.cumsum(sorted_neg, axis=1), [[0, 0], [1, 0]])
        sums = ops.take_along_axis(prefix, count, axis=1)
        count = ops.cast(count, "float32") * posf
        return ops.sum(posf * (count * threshold - sums), axis=1), ops.maximum(ops.sum(count), 1.0)
    # semi_hard: the first negative strictly farther than the positive, else the fallback one
    n_neg = ops.sum(ops.cast(neg, "int32"), axis=1, keepdims=True)
    first_farther = _count_below(sorted_neg, d, side="right")
    farther = ops.take_along_axis(sorted_neg, ops.minimum(first_farther, n - 1), axis=1)
    if semi_hard_fallback == "farthest":
        fallback = ops.take_along_axis(sorted_neg, ops.maximum(n_neg - 1, 0), axis=1)
    else:
        fallback = sorted_neg[:, :1]
    chosen = ops.where(first_farther < n_neg, farther, fallback)
    valid = ops.logical_and(pos, n_neg > 0)
    terms, count = _masked_terms(_hinge(d - chosen, margin, soft_margin), valid)
    return ops.sum(terms, axis=1), count


def _count_below(sorted_rows, values, side: str = "left"):
    """Per row ``i`` and column ``j``: how many of ``sorted_rows[i]`` are ``< values[i, j]``
    (``side="left"``) or ``<= values[i, j]`` (``"right"``), with 1-D ``keras.ops.searchsorted``.

    Every number is first replaced by its rank among all of ``sorted_rows`` (same side), which
    keeps each comparison exact (``s < v`` iff ``rank(s) < rank(v)`` for ``"left"``; ``<=`` for
    ``"right"``); the integer ranks of row ``i`` are then shifted by ``i * (size + 1)``, so that
    the rows form one sorted 1-D sequence. ``O(n^2 log n)`` for ``n x n`` inputs; int32 keys,
    so rows of up to 1290 entries (batches of up to 1290 embeddings)."""
    rows, cols = ops.shape(sorted_rows)[0], ops.shape(sorted_rows)[1]
    flat = ops.reshape(sorted_rows, (-1,))
    everything = ops.sort(flat)
    size = ops.shape(flat)[0]
    offsets = ops.arange(rows, dtype="int32")[:, None] * ops.cast(size + 1, "int32")
    keys = ops.cast(ops.searchsorted(everything, flat, side=side), "int32") + ops.reshape(
        ops.broadcast_to(offsets, (rows, cols)), (-1,)
    )
    value_keys = ops.cast(ops.searchsorted(everything, ops.reshape(values, (-1,)), side=side), "int32")
    value_keys = ops.reshape(value_keys, ops.shape(values)) + offsets
    found = ops.cast(ops.searchsorted(keys, ops.reshape(value_keys, (-1,)), side=side), "int32")
    return ops.reshape(found, ops.shape(values)) - ops.arange(rows, dtype="int32")[:, None] * ops.cast(cols, "int32")


def active_triplet_counts(labels, embeddings, margin: float = 0.2, distance: str = "squared_euclidean"):
    """``(active, valid)``: how many valid triplets violate the margin, and how many there are.

    A triplet is active when ``d(a, p) - d(a, n) + margin > 0`` (it has a positive hinge loss).

    Returns:
        Two float32 scalars.
    """
    d = pairwise_distances(embeddings, distance)
    pos, neg = _label_masks(labels, ops.shape(d)[0])
    far = ops.max(d) + margin + 1.0
    active = _count_below(ops.sort(ops.where(neg, d, far), axis=1), d + margin)
    posf = ops.cast(pos, "float32")
    n_neg = ops.sum(ops.cast(neg, "float32"), axis=1, keepdims=True)
    return ops.sum(posf * ops.cast(active, "float32")), ops.sum(posf * n_neg)


@keras.saving.register_keras_serializable(package="kerascnn")
class TripletLoss(keras.losses.Loss):
    """Triplet loss with online mining, ``(y_true=labels, y_pred=embeddings)``.

    See :func:`triplet_loss` for the three minings. Train with batches that hold several images
    of each identity (P x K batches, :func:`kerascnn.data.pk.pk_batches`); a batch without any
    valid triplet contributes 0.

    Args:
        margin: the margin, in units of ``distance`` (0.2 with squared Euclidean distances of
            unit vectors, as FaceNet).
        mining: ``"batch_all"``, ``"batch_hard"`` or ``"semi_hard"``.
        distance: ``"squared_euclidean"``, ``"euclidean"`` or ``"cosine"``.
        soft_margin: ``softplus(d_ap - d_an)`` instead of the hinge (``margin`` unused).
        semi_hard_fallback: ``"farthest"`` (tensorflow-addons) or ``"closest"``: the negative
            ``semi_hard`` uses when none is farther than the positive.
        name: the loss name.
        reduction: as :class:`keras.losses.Loss`. The loss gives one value per anchor (each
            sample of the batch), that anchor's share of :func:`triplet_loss`, scaled so that
            their mean is the batch loss: ``"sum_over_batch_size"`` (the default) gives
            :func:`triplet_loss`, ``"sum"`` ``batch`` times it, ``None`` the ``(batch,)`` values
            (TensorFlow Similarity's triplet losses also give one value per anchor, but each
            anchor's own mean: kerascnn keeps the batch mean over triplets of tensorflow-addons
            and Hermans et al., which weighs anchors by their number of triplets).
            ``sample_weight`` weighs the anchors.
        dtype: as :class:`keras.losses.Loss` (computations are float32).

    Raises:
        ValueError: unknown ``mining``, ``distance`` or ``semi_hard_fallback``, or a negative
            ``margin``.
    """

    def __init__(
        self,
        margin: float = 0.2,
        mining: str = "batch_all",
        distance: str = "squared_euclidean",
        soft_margin: bool = False,
        semi_hard_fallback: str = "farthest",
        name: str = "triplet_loss",
        reduction: str = "sum_over_batch_size",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        if margin < 0:
            raise ValueError(f"margin must be >= 0, got {margin}")
        self.margin = float(margin)
        self.mining = check_choice("mining", mining, MININGS)
        self.distance = check_choice("distance", distance, DISTANCES)
        self.soft_margin = bool(soft_margin)
        self.semi_hard_fallback = check_choice("semi_hard_fallback", semi_hard_fallback, SEMI_HARD_FALLBACKS)

    def call(self, y_true, y_pred):
        per_anchor, normalizer = triplet_terms(
            y_true, y_pred, self.margin, self.mining, self.distance, self.soft_margin, self.semi_hard_fallback
        )
        return per_anchor * (ops.cast(ops.shape(per_anchor)[0], "float32") / normalizer)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            margin=self.margin, mining=self.mining, distance=self.distance, soft_margin=self.soft_margin,
            semi_hard_fallback=self.semi_hard_fallback,
        )
        return config


@keras.saving.register_keras_serializable(package="kerascnn")
class ActiveTripletFraction(keras.metrics.Metric):
    """The fraction of valid triplets that violate the margin, ``(y_true=labels, y_pred=embeddings)``.

    Accumulated over batches as (active triplets) / (valid triplets), whatever the mining the
    loss uses: it falls towards 0 as the embedding separates identities. Use in
    ``compile(metrics=[ActiveTripletFraction(margin)])`` with the loss's margin and distance.

    Args:
        margin: the margin.
        distance: ``"squared_euclidean"``, ``"euclidean"`` or ``"cosine"``.
        name: the metric name.
    """

    def __init__(self, margin: float = 0.2, distance: str = "squared_euclidean", name: str = "active_triplets", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.margin = float(margin)
        self.distance = check_choice("distance", distance, DISTANCES)
        self.active = self.add_variable(shape=(), initializer="zeros", name="active", dtype="float32")
        self.valid = self.add_variable(shape=(), initializer="zeros", name="valid", dtype="float32")

    def update_state(self, y_true, y_pred, sample_weight=None):
        active, valid = active_triplet_counts(y_true, y_pred, self.margin, self.distance)
        self.active.assign_add(active)
        self.valid.assign_add(valid)

    def result(self):
        return self.active / ops.maximum(self.valid, 1.0)

    def reset_state(self):
        self.active.assign(0.0)
        self.valid.assign(0.0)

    def get_config(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "margin": self.margin, "distance": self.distance}


@keras.saving.register_keras_serializable(package="kerascnn")
class ContrastiveLoss(keras.losses.Loss):
    """Contrastive loss of pairs (Hadsell, Chopra, LeCun 2006).

    ``y_true`` is 1 for a same-identity pair and 0 for a different one; ``y_pred`` is the
    **distance** of each pair (shape ``(batch,)`` or ``(batch, 1)``), as output by
    :func:`kerascnn.siamese.build_pair_model` with ``head="distance"``. The loss is the mean of
    ``y * d**2 + (1 - y) * max(margin - d, 0)**2``.

    Args:
        margin: distance beyond which different pairs cost nothing (1.0 suits unit vectors,
            whose Euclidean distances lie in [0, 2]).
        name, reduction, dtype: as :class:`keras.losses.Loss`.

    Raises:
        ValueError: a negative ``margin``.
    """

    def __init__(self, margin: float = 1.0, name: str = "contrastive_loss", reduction: str = "sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        if margin < 0:
            raise ValueError(f"margin must be >= 0, got {margin}")
        self.margin = float(margin)

    def call(self, y_true, y_pred):
        d = ops.reshape(ops.cast(y_pred, "float32"), (-1,))
        y = ops.reshape(ops.cast(y_true, "float32"), (-1,))
        return y * ops.square(d) + (1.0 - y) * ops.square(ops.relu(self.margin - d))

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(margin=self.margin)
        return config


@keras.saving.register_keras_serializable(package="kerascnn")
class ArcFaceHead(keras.layers.Layer):
    """Additive angular margin logits (ArcFace, Deng et al. 2019): ``(embeddings, labels) -> logits``.

    Holds the ``(dim, num_classes)`` class-centre matrix. With ``cos_j`` the cosine between the
    embedding and centre ``j``, the logits are ``scale * cos_j`` for the other classes and
    ``scale * cos(theta_y + margin)`` for the true class ``y``; where ``theta_y + margin`` would
    pass pi, ``cos_y - margin * sin(margin)`` is used instead (insightface's rule, keeps the
    logit decreasing in theta). Train with
    ``SparseCategoricalCrossentropy(from_logits=True)``; at inference only the embedder is used
    (see :func:`kerascnn.siamese.build_arcface_model`). Float32 logits under any policy.

    Args:
        num_classes: number of training identities.
        scale: the logit scale ``s`` (64 in the paper; 30 trains more easily on small data).
        margin: the additive angular margin ``m`` in radians (0.5 in the paper).
        kernel_initializer, kernel_regularizer: of the class-centre matrix.

    Raises:
        ValueError: ``num_classes`` < 1, ``scale`` <= 0 or ``margin`` outside [0, pi/2).
    """

    def __init__(
        self,
        num_classes: int,
        scale: float = 30.0,
        margin: float = 0.5,
        kernel_initializer="glorot_uniform",
        kernel_regularizer=None,
        **kwargs,
    ):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if scale <= 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        if not 0 <= margin < math.pi / 2:
            raise ValueError(f"margin must be in [0, pi/2) radians, got {margin}")
        self.num_classes = int(num_classes)
        self.scale = float(scale)
        self.margin = float(margin)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)

    def build(self, input_shape):
        dim = input_shape[0][-1]
        self.kernel = self.add_weight(
            shape=(dim, self.num_classes), initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer, name="kernel",
        )

    def call(self, inputs):
        embeddings, labels = inputs
        x = _l2_normalize(ops.cast(embeddings, "float32"))
        w = _l2_normalize(ops.cast(self.kernel, "float32"), axis=0)
        cos = ops.clip(ops.matmul(x, w), -1.0, 1.0)
        sin = ops.sqrt(ops.maximum(1.0 - ops.square(cos), 1e-12))
        m = self.margin
        with_margin = cos * math.cos(m) - sin * math.sin(m)
        with_margin = ops.where(cos > math.cos(math.pi - m), with_margin, cos - m * math.sin(m))
        onehot = ops.one_hot(ops.reshape(ops.cast(labels, "int32"), (-1,)), self.num_classes, dtype="float32")
        return self.scale * (onehot * with_margin + (1.0 - onehot) * cos)

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], self.num_classes)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            num_classes=self.num_classes, scale=self.scale, margin=self.margin,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            kernel_regularizer=keras.regularizers.serialize(self.kernel_regularizer),
        )
        return config


def default_loss(model: keras.Model) -> keras.losses.Loss:
    """The classification loss a model's head implies: sparse categorical cross-entropy.

    Args:
        model: a classifier, possibly wrapped or ending in float32 casts.

    Returns:
        ``SparseCategoricalCrossentropy``, on logits unless the model ends with a softmax.
    """
    while model.layers and isinstance(model.layers[-1], keras.Model):  # a wrapper or a nested head
        model = model.layers[-1]
    for layer in reversed(model.layers):  # skip the float32 casts of :func:`float32_output`
        activation = getattr(getattr(layer, "activation", None), "__name__", "linear")
        if not (isinstance(layer, keras.layers.Activation) and activation == "linear"):
            break
    return keras.losses.SparseCategoricalCrossentropy(from_logits=activation != "softmax")
