"""Exception classes of kerascnn.

Every error kerascnn raises on bad input is one of these, so callers can catch precisely what
they expect. Each subclasses the built-in exception a Python user would reach for first
(``ValueError``, ``KeyError``, ``OSError``), so generic handlers keep working. Messages say what
was expected and what was seen.
"""

from __future__ import annotations


class KerasCNNError(Exception):
    """Base class of every kerascnn error."""


# --- models -------------------------------------------------------------------------------
class UnknownModelError(KerasCNNError, KeyError):
    """A model name that is not in the registry (the message lists close matches)."""

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly
        return str(self.args[0]) if self.args else ""


class InputShapeError(KerasCNNError, ValueError):
    """An input shape the network cannot take (too small, wrong channels for the weights...)."""


class ImageDataFormatError(KerasCNNError, ValueError):
    """``keras.config.image_data_format()`` is ``"channels_first"``: kerascnn's models are built
    channels-last only and refuse to build (rather than build silently wrong)."""


class ModelArgumentError(KerasCNNError, ValueError):
    """A model builder argument out of range (``classes`` below 0, ``out_indices`` that name no stage)."""


class BackendError(KerasCNNError, RuntimeError):
    """A feature that needs the TensorFlow backend (``tf.data``, ``tf.distribute``, ``tf.function``)
    called while Keras runs on another backend (JAX, PyTorch)."""


class WeightsMismatchError(KerasCNNError, ValueError):
    """Weights that do not fit the model (another architecture, other shapes, missing layers)."""


class WeightsIntegrityError(KerasCNNError, ValueError):
    """Weights that fit the model but cannot be the trained ones: NaN, implausible values, or a
    network that does not give its known outputs (a damaged file); names the first bad layer."""


# --- data and training ----------------------------------------------------------------------
class DlibFormatError(KerasCNNError, ValueError):
    """A file that is not a dlib network this reader knows, or is truncated (the message gives the byte)."""


class FrozenGraphError(KerasCNNError, ValueError):
    """A file that is not a TensorFlow frozen graph (``GraphDef``) this reader knows: it does not
    parse, or lacks the nodes of the network it should hold (the message names the first missing)."""


class ImageReadError(KerasCNNError, OSError):
    """A file that cannot be read as an image; the message names the file."""


class ImageTooLargeError(ImageReadError):
    """An image above the pixel cap (protection against decompression bombs)."""


class DatasetError(KerasCNNError, ValueError):
    """An empty folder, a class without images, a malformed pairs file..."""


class ClusterConfigError(KerasCNNError, ValueError):
    """A ``TF_CONFIG`` that does not parse or does not describe a usable cluster."""


class CheckpointMismatchError(KerasCNNError, ValueError):
    """A checkpoint written by another architecture than the one being resumed."""


# --- faces ----------------------------------------------------------------------------------
class FaceError(KerasCNNError, ValueError):
    """Base class of face-pipeline errors."""


class NoFaceError(FaceError):
    """No face was found in an image; the message names the file."""


class MultipleFacesError(FaceError):
    """Several faces were found where exactly one was required."""


class GalleryError(KerasCNNError):
    """Base class of gallery errors."""


class UnknownIdentityError(GalleryError, KeyError):
    """An identity that is not enrolled in the gallery."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class EmptyGalleryError(GalleryError, ValueError):
    """A search in a gallery that has no templates."""


class GalleryModelMismatchError(GalleryError, ValueError):
    """A gallery enrolled with another embedding model than the one in use."""


class GalleryCorruptError(GalleryError, OSError):
    """A gallery file that is damaged or is not a kerascnn gallery (it is never overwritten)."""


class GalleryLockedError(GalleryError, OSError):
    """A gallery file that is locked by another process or is read-only."""


class GalleryPermissionError(GalleryError, PermissionError):
    """A gallery file owned by another user, or readable or writable by group or others (the
    message says how to fix the permissions)."""


class GalleryConnectionError(GalleryError, ConnectionError):
    """A gallery database server that cannot be reached, refuses the credentials, or went away
    in the middle of a transaction (rolled back, unless the connection broke during its commit)."""


class DetectorError(FaceError):
    """A face detector that cannot be built or misbehaves: unknown name, missing or invalid model file."""


class GalleryNotFoundError(GalleryError, FileNotFoundError):
    """A gallery file that does not exist where an existing gallery is required."""


class GalleryInputError(GalleryError, ValueError):
    """Embeddings of the wrong shape or dtype, or with NaN; an invalid or taken identity name."""


class ConfusableNameError(GalleryInputError):
    """A new identity name that looks like an enrolled one (the same Unicode confusables skeleton,
    e.g. a Cyrillic ``а`` for a Latin ``a``); the message names both and where they differ."""


class ApiKeyError(GalleryInputError):
    """An API key request that cannot be done: an unknown scope, a bad or taken key name."""


class UnknownApiKeyError(ApiKeyError, KeyError):
    """An API key name that the gallery does not hold."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


# --- distillation ---------------------------------------------------------------------------
class TeacherUnavailableError(KerasCNNError, ImportError):
    """A teacher embedder whose optional dependency or model files are missing."""


class FaceModelError(KerasCNNError, OSError):
    """A face model or model card that is missing, unreadable or malformed; names the file."""


class CalibrationDowngradeError(KerasCNNError, ValueError):
    """A calibration measured on less data (fewer pairs, people or searches) than the one it would
    replace; it is stored only when forced (``--force``), and the file is left as it was."""


class UnknownFaceModelError(FaceModelError):
    """A face model name that is not shipped (the message lists the shipped ones)."""


class UnknownAugmentationError(KerasCNNError, ValueError):
    """An augmentation preset or layer name that kerascnn does not know (lists the names)."""


class WeightsUnavailableError(KerasCNNError, OSError):
    """Pretrained weights that cannot be fetched (offline); the message says how to pass a file."""


# --- detection ------------------------------------------------------------------------------
class BoxError(KerasCNNError, ValueError):
    """Boxes of the wrong shape or format, with negative width/height or not finite; an
    evaluation with no ground-truth box at all (mAP is then undefined)."""


# --- seeing and fooling networks ------------------------------------------------------------
class LayerNotFoundError(KerasCNNError, KeyError):
    """A layer name that the model does not have (the message lists the candidates)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class ImageSizeMismatchError(KerasCNNError, ValueError):
    """Two images that must share a size (content and style images) do not."""


class EpsilonError(KerasCNNError, ValueError):
    """An attack budget (epsilon, step size) outside the image's value range, or negative."""
