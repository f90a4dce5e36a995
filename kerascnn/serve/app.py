"""The face service's routes: parse, authorise, call :class:`~kerascnn.face.faces.Faces`, serialise.

:func:`create_app` loads the model once and answers:

======================================  ========  ===================================================
route                                   scope     what
======================================  ========  ===================================================
``POST /v1/people/{name}/faces``        enroll    enroll photos (multipart field ``photo``, repeated)
``GET /v1/people``                      read      the enrolled people
``GET /v1/people/{name}``               read      one person (templates, enrollment time)
``DELETE /v1/people/{name}``            admin     forget a person: every template goes
``POST /v1/verify``                     read      ``name`` and ``photo``: 1:1
``POST /v1/compare``                    read      ``a`` and ``b`` (two photos): 1:1, no gallery
``POST /v1/identify``                   read      ``photo`` (``top_k``, ``fpir``, ``threshold``): 1:N
``GET/POST /v1/keys``, ``DELETE ...``   admin     list, make and revoke API keys
``GET /metrics``                        read      Prometheus text
``GET /healthz``                        none      the model loaded, the gallery reachable
``GET /``, ``/docs``                    none      the web page; the OpenAPI docs
======================================  ========  ===================================================

Answers carry the fields of the CLI's ``--json``; errors are ``{"error", "type"}``
(:mod:`kerascnn.serve.errors`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from importlib import resources
from typing import Any, Callable

from fastapi import Depends, FastAPI, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException as StarletteHTTPException

from kerascnn.errors import KerasCNNError, UnknownIdentityError
from kerascnn.face.faces import Faces, compare
from kerascnn.face.gallery.records import check_name
from kerascnn.serve.batching import BatchingPipeline
from kerascnn.serve.errors import ServiceError, answer
from kerascnn.serve.keys import Authoriser
from kerascnn.serve.metrics import Counting, Metrics
from kerascnn.serve.uploads import BodyLimit, photos, read_form

log = logging.getLogger("kerascnn.serve")

MAX_REQUEST_BYTES = 20 * 1024 * 1024
MAX_IMAGES = 10
MAX_TOP_K = 100


def _form_doc(fields: dict[str, dict], required: list[str]) -> dict:
    """OpenAPI ``requestBody`` of a multipart form (the routes parse it themselves, in memory)."""
    schema = {"type": "object", "properties": fields, "required": required}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}


_FILE = {"type": "string", "format": "binary"}


def create_app(gallery_location: str | os.PathLike, *, model: Any = None, detector: Any = None,
               keys_required: bool = True, cors_origins: tuple[str, ...] = (),
               max_request_bytes: int = MAX_REQUEST_BYTES, max_images: int = MAX_IMAGES,
               batch_wait_ms: float = 5.0, calibration_file: str | os.PathLike | None = None) -> FastAPI:
    """The face service over one gallery (the model is loaded here, once).

    Args:
        gallery_location: a SQLite file path or a ``postgresql://`` URL (created if missing).
        model: the face model (a shipped name, a ``.keras`` path or a Keras model); default the default model.
        detector: ``"yunet"`` (default), ``"haar"``, a YuNet ``.onnx`` path or a callable.
        keys_required: refuse requests without a valid API key (the gallery must hold one).
        cors_origins: the web origins allowed to call the API from a browser (none: CORS closed).
        max_request_bytes: the largest request body (413 above).
        max_images: the most photos in one request (413 above).
        batch_wait_ms: how long the micro-batcher waits for concurrent requests' faces.
        calibration_file: take thresholds from this calibration file.

    Returns:
        A FastAPI app (run it with uvicorn).

    Raises:
        ServiceError: ``keys_required`` and the gallery holds no valid key.
    """
    location = os.fspath(gallery_location) if isinstance(gallery_location, os.PathLike) else gallery_location
    pipeline = BatchingPipeline(model=model, detector=detector, wait_ms=batch_wait_ms)
    faces = None
    try:
        faces = Faces(location, pipeline=pipeline, calibration_file=calibration_file)
        auth = Authoriser(location, keys_required)
    except BaseException:
        if faces is not None:
            faces.close()
        pipeline.batcher.close()
        raise
    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        auth.close()
        faces.close()
        pipeline.batcher.close()

    app = FastAPI(title="kerascnn face service", version="1", lifespan=lifespan,
                  description="Enroll, verify and identify faces over one gallery. Send an API key as "
                              "`Authorization: Bearer <key>` or `X-API-Key: <key>`.")
    app.state.faces, app.state.auth, app.state.metrics, app.state.pipeline = faces, auth, metrics, pipeline
    bearer = HTTPBearer(auto_error=False)
    header_key = APIKeyHeader(name="X-API-Key", auto_error=False)

    def needs(scope: str):
        async def check(credentials: HTTPAuthorizationCredentials | None = Security(bearer),
                        api_key: str | None = Security(header_key)) -> None:
            authorization = None if credentials is None else f"{credentials.scheme} {credentials.credentials}"
            await run_in_threadpool(auth.check, authorization, api_key, scope)

        return Depends(check)

    async def form(request: Request) -> FormData:
        return await read_form(request, max_images, max_request_bytes)

    async def call(fn: Callable, *args, **kwargs) -> Any:
        return await run_in_threadpool(fn, *args, **kwargs)

    # -- errors and metrics --------------------------------------------------------------------------
    def error_response(exc: BaseException) -> JSONResponse:
        status, body = answer(exc)
        metrics.error(body["type"])
        if status == 500:
            log.error("internal error: %s", type(exc).__name__, exc_info=exc)
        return JSONResponse(body, status_code=status)

    for kind in (Exception, ServiceError, KerasCNNError):  # Exception: 500, outside the other middleware
        app.add_exception_handler(kind, lambda request, exc: error_response(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = {404: "NotFound", 405: "MethodNotAllowed"}.get(exc.status_code, "BadRequest")
        return error_response(ServiceError(exc.status_code, kind, str(exc.detail)))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        where = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return error_response(ServiceError(422, "InvalidParameter", where))


    # -- people ----------------------------------------------------------------------------------------
    @app.post("/v1/people/{name}/faces", dependencies=[needs("enroll")], tags=["people"],
              openapi_extra=_form_doc({"photo": {"type": "array", "items": _FILE}}, ["photo"]))
    async def enroll(name: str, data: FormData = Depends(form)) -> dict:
        """Enroll one or more photos of a person (field ``photo``, repeated); photos already
        enrolled for them are skipped (a retried request adds nothing)."""
        uploads = await photos(data, "photo")
        if not uploads:
            raise ServiceError(422, "InvalidParameter", "no photo: send one or more files in form field 'photo'")
        report = await call(faces.enroll, name, [content for _, content in uploads])
        return {"gallery": faces.gallery.location, **report.to_dict(), "nothing_enrolled": not report.enrolled}

    @app.get("/v1/people", dependencies=[needs("read")], tags=["people"])
    async def people() -> dict:
        """The enrolled people: name, templates, enrollment time."""
        infos = await call(faces.identities)
        return {"gallery": faces.gallery.location, "identities": [i.to_dict() for i in infos]}

    @app.get("/v1/people/{name}", dependencies=[needs("read")], tags=["people"])
    async def person(name: str) -> dict:
        """One enrolled person (404 if not enrolled)."""
        return (await call(_person, faces, name)).to_dict()

    @app.delete("/v1/people/{name}", dependencies=[needs("admin")], tags=["people"])
    async def remove(name: str) -> dict:
        """Forget a person: every template of theirs is removed, in one transaction."""
        return {"name": name, "removed_templates": await call(faces.remove, name)}

    # -- decisions -------------------------------------------------------------------------------------
    @app.post("/v1/verify", dependencies=[needs("read")], tags=["decisions"],
              openapi_extra=_form_doc({"name": {"type": "string"}, "photo": _FILE, "threshold": {"type": "number"},
                                       "reduce": {"type": "string", "enum": ["best", "mean"]}}, ["name", "photo"]))
    async def verify(data: FormData = Depends(form)) -> dict:
        """Is the face in ``photo`` the enrolled ``name``? (1:1)"""
        name = _text(data, "name")
        image, content = await _one_photo(data, "photo")
        reduce = _text(data, "reduce", "best")
        if reduce not in ("best", "mean"):
            raise ServiceError(422, "InvalidParameter", f"reduce must be 'best' or 'mean', got {reduce!r}")
        result = await call(faces.verify, name, content, threshold=_number(data, "threshold"), reduce=reduce)
        return {"image": image, **result.to_dict()}

    @app.post("/v1/compare", dependencies=[needs("read")], tags=["decisions"],
              openapi_extra=_form_doc({"a": _FILE, "b": _FILE, "threshold": {"type": "number"}}, ["a", "b"]))
    async def compare_photos(data: FormData = Depends(form)) -> dict:
        """Are the faces in photos ``a`` and ``b`` the same person? (1:1, no gallery)"""
        (image_a, a), (image_b, b) = await _one_photo(data, "a"), await _one_photo(data, "b")
        result = await call(compare, a, b, threshold=_number(data, "threshold"), pipeline=pipeline,
                            calibration_file=calibration_file)
        return {"images": [image_a, image_b], **result.to_dict()}

    @app.post("/v1/identify", dependencies=[needs("read")], tags=["decisions"],
              openapi_extra=_form_doc({"photo": _FILE, "top_k": {"type": "integer", "default": 5},
                                       "fpir": {"type": "number"}, "threshold": {"type": "number"}}, ["photo"]))
    async def identify(data: FormData = Depends(form)) -> dict:
        """Who among the enrolled is the face in ``photo``, if anyone? (1:N at the open-set operating point)"""
        image, content = await _one_photo(data, "photo")
        top_k = _integer(data, "top_k", 5, 1, MAX_TOP_K)
        fpir = _number(data, "fpir")
        if fpir is not None and not 0 < fpir < 1:
            raise ServiceError(422, "InvalidParameter", f"fpir must be between 0 and 1, got {fpir:g}")
        result = await call(faces.identify, content, top_k=top_k, fpir=fpir, threshold=_number(data, "threshold"))
        return {"image": image, **result.to_dict()}

    # -- keys --------------------------------------------------------------------------------------------
    @app.get("/v1/keys", dependencies=[needs("admin")], tags=["keys"])
    async def keys() -> dict:
        """The gallery's API keys (names, scopes, times; never a key)."""
        return {"keys": [k.to_dict() for k in await call(auth.list)]}

    @app.post("/v1/keys", dependencies=[needs("admin")], tags=["keys"],
              openapi_extra=_form_doc({"name": {"type": "string"},
                                       "scope": {"type": "string", "enum": ["read", "enroll", "admin"]}},
                                      ["name", "scope"]))
    async def make_key(data: FormData = Depends(form)) -> dict:
        """Make a key: the answer holds it, the only time it is shown."""
        name, scope = _text(data, "name"), _text(data, "scope")
        return {"name": name, "scope": scope, "key": await call(auth.create, name, scope)}

    @app.delete("/v1/keys/{name}", dependencies=[needs("admin")], tags=["keys"])
    async def revoke(name: str) -> dict:
        """Revoke a key at once."""
        return {"name": name, "revoked": await call(auth.revoke, name)}

    # -- operations ----------------------------------------------------------------------------------------
    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict:
        """The model is loaded and the gallery answers (503 otherwise)."""
        people_count = await call(len, faces)
        return {"status": "ok", "model": pipeline.model.name, "gallery": faces.gallery.location,
                "people": people_count}

    @app.get("/metrics", dependencies=[needs("read")], tags=["operations"], response_class=PlainTextResponse)
    async def metrics_text() -> PlainTextResponse:
        """Requests, latencies, errors, gallery size and model calls, in the Prometheus text format."""
        people_count = await call(len, faces)
        text = metrics.render({
            "kerascnn_gallery_people": ("People enrolled.", people_count),
            "kerascnn_model_calls_total": ("Embedding model calls (one per micro-batch).", pipeline.batcher.calls),
            "kerascnn_model_crops_total": ("Face crops embedded.", pipeline.batcher.crops),
        })
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    static = resources.files("kerascnn.serve") / "static"

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(str(static / "index.html"))

    app.mount("/static", StaticFiles(directory=str(static)), name="static")
    if cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["GET", "POST", "DELETE"],
                           allow_headers=["Authorization", "X-API-Key", "Content-Type", "Idempotency-Key"])
    app.add_middleware(BodyLimit, max_bytes=max_request_bytes)
    app.add_middleware(Counting, metrics=metrics)
    return app


def _person(faces: Faces, name: str):
    """The :class:`~kerascnn.face.gallery.IdentityInfo` of ``name``; UnknownIdentityError if not enrolled."""
    wanted = check_name(name)
    for info in faces.identities():
        if info.name == wanted:
            return info
    raise UnknownIdentityError(f"{wanted!r} is not enrolled in gallery {faces.gallery.location}")


def _text(data: FormData, field: str, default: str | None = None) -> str:
    value = data.get(field, default)
    if value is None:
        raise ServiceError(422, "InvalidParameter", f"missing form field {field!r}")
    if not isinstance(value, str):
        raise ServiceError(422, "InvalidParameter", f"form field {field!r} must be text, got a file")
    return value


def _number(data: FormData, field: str) -> float | None:
    """A finite number from the form, or None when the field is absent or empty."""
    text = data.get(field)
    if text is None or text == "":
        return None
    try:
        value = float(_text(data, field))
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ServiceError(422, "InvalidParameter", f"{field} must be a finite number, got {text!r:.50}")
    return value


def _integer(data: FormData, field: str, default: int, low: int, high: int) -> int:
    text = _text(data, field, str(default))
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise ServiceError(422, "InvalidParameter",
                           f"{field} must be an integer from {low} to {high}, got {text!r:.50}")
    return value


async def _one_photo(data: FormData, field: str) -> tuple[str, bytes]:
    uploads = await photos(data, field)
    if len(uploads) != 1:
        raise ServiceError(422, "InvalidParameter", f"form field {field!r} must hold one photo, got {len(uploads)}")
    return uploads[0]
