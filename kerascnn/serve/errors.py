"""Errors as the service answers them: JSON ``{"error": message, "type": stable type}`` and a status.

The type is the name of the kerascnn error class (the CLI's ``--json`` says the same), or one of
the service's own (:class:`ServiceError`): ``Unauthorized``, ``Forbidden``, ``RequestTooLarge``,
``TooManyImages``, ``BadRequest``, ``InternalError``. No answer carries a traceback.
"""

from __future__ import annotations

from kerascnn.errors import (
    ApiKeyError,
    ConfusableNameError,
    EmptyGalleryError,
    FaceError,
    FaceModelError,
    GalleryConnectionError,
    GalleryCorruptError,
    GalleryError,
    GalleryInputError,
    GalleryLockedError,
    GalleryModelMismatchError,
    ImageReadError,
    ImageTooLargeError,
    KerasCNNError,
    UnknownApiKeyError,
    UnknownIdentityError,
)

# the first class an error is an instance of decides its status (subclasses before their bases)
STATUSES: tuple[tuple[type[BaseException], int], ...] = (
    (ImageTooLargeError, 413),
    (ImageReadError, 400),
    (FaceError, 400),
    (UnknownIdentityError, 404),
    (UnknownApiKeyError, 404),
    (ConfusableNameError, 409),
    (EmptyGalleryError, 409),
    (GalleryModelMismatchError, 409),
    (ApiKeyError, 422),
    (GalleryInputError, 422),
    (FaceModelError, 422),
    (GalleryLockedError, 503),
    (GalleryConnectionError, 503),
    (GalleryCorruptError, 503),
    (GalleryError, 503),
    (KerasCNNError, 400),
)


class ServiceError(KerasCNNError):
    """An error of the service itself (authentication, limits, request format).

    Args:
        status: the HTTP status.
        kind: the stable ``type`` of the answer.
        message: what was expected and what was seen.
    """

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message


def answer(exc: BaseException) -> tuple[int, dict]:
    """``(status, JSON body)`` for an error; unexpected ones become 500 ``InternalError`` (no details)."""
    if isinstance(exc, ServiceError):
        return exc.status, {"error": exc.message, "type": exc.kind}
    for cls, status in STATUSES:
        if isinstance(exc, cls):
            return status, {"error": str(exc), "type": type(exc).__name__}
    return 500, {"error": "internal error: the server logged it", "type": "InternalError"}
