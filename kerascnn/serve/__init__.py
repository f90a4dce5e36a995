"""The face service: a REST API (FastAPI on uvicorn) over :class:`kerascnn.face.faces.Faces`.

``kerascnn serve --gallery faces.db`` runs it (:mod:`kerascnn.cli.serve`);
:func:`~kerascnn.serve.app.create_app` builds it.
Needs the ``serve`` extra (``pip install 'kerascnn[serve]'``); nothing else in kerascnn imports
this package.

- :mod:`~kerascnn.serve.app`: the routes (parse, authorise, call, serialise);
- :mod:`~kerascnn.serve.keys`: API keys and scopes (stored hashed in the gallery);
- :mod:`~kerascnn.serve.batching`: concurrent requests' faces embedded in one model call;
- :mod:`~kerascnn.serve.uploads`: upload limits, forms held in memory;
- :mod:`~kerascnn.serve.errors`: errors as JSON with a stable type and status;
- :mod:`~kerascnn.serve.metrics`: Prometheus text.
"""
