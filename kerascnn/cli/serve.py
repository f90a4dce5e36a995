"""``kerascnn serve`` and ``kerascnn keys create|list|revoke``: the face service and its API keys.

``serve`` imports FastAPI and uvicorn (the ``serve`` extra) when it runs; the ``keys`` commands
need nothing but the gallery.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys

from kerascnn.cli.common import EXIT_OK, GALLERY_HELP, add_detector_option, positive_int, print_result

LOOPBACK_NAMES = ("localhost",)


def add_commands(sub) -> None:
    """Add ``serve`` and ``keys`` to ``sub`` (an ``argparse`` subparsers object); each sets ``func``."""
    p = sub.add_parser("serve", help="run the face service (REST API and web page) over a gallery",
                       description="Serve a gallery over HTTP: enroll, verify, compare, identify, list and remove "
                                   "people (FastAPI on uvicorn; OpenAPI docs at /docs, the web page at /). Every "
                                   "request needs an API key (kerascnn keys create) unless --insecure-no-auth.")
    p.add_argument("--gallery", required=True, metavar="G", help=GALLERY_HELP)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=positive_int, default=8000, help="port (default 8000)")
    p.add_argument("--model", metavar="M", help="face model: a shipped name or a .keras path (default the shipped one)")
    add_detector_option(p)
    p.add_argument("--calibration-file", metavar="FILE", help="take thresholds from this calibration file")
    p.add_argument("--insecure-no-auth", action="store_true",
                   help="serve without API keys (anyone who can connect may do everything): loopback only")
    p.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                   help="a web origin allowed to call the API from a browser (repeat; default none)")
    p.add_argument("--max-request-mb", type=float, default=20.0, metavar="MB",
                   help="largest request body in MB (default 20)")
    p.add_argument("--max-images", type=positive_int, default=10, metavar="N", help="most photos in one request (default 10)")
    p.add_argument("--batch-wait-ms", type=float, default=5.0, metavar="MS",
                   help="how long to wait for concurrent requests' faces to embed them together (default 5)")
    p.set_defaults(func=_cmd_serve)

    keys = sub.add_parser("keys", help="make, list and revoke the API keys of a gallery's service",
                          description="API keys open a gallery's service (kerascnn serve). Scopes: read (verify, "
                                      "compare, identify, list), enroll (also enroll), admin (also remove people "
                                      "and manage keys). Only a key's hash is stored.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--gallery", required=True, metavar="G", help=GALLERY_HELP)
    common.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    actions = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    p = actions.add_parser("create", parents=[common], help="make a key and print it (once: only its hash is kept)")
    p.add_argument("name", metavar="NAME", help="what the key is for (unique in the gallery)")
    p.add_argument("--scope", required=True, choices=("read", "enroll", "admin"), help="what the key may do")
    p.set_defaults(func=_cmd_keys_create)
    p = actions.add_parser("list", parents=[common], help="list the keys (names, scopes, times; never a key)")
    p.set_defaults(func=_cmd_keys_list)
    p = actions.add_parser("revoke", parents=[common], help="revoke a key: refused from the next request on")
    p.add_argument("name", metavar="NAME")
    p.set_defaults(func=_cmd_keys_revoke)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (``127.0.0.1``, ``::1``, ``localhost``)."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _cmd_serve(args) -> int:
    from kerascnn.serve.errors import ServiceError

    if args.insecure_no_auth and not is_loopback(args.host):
        raise ServiceError(400, "InsecureBind", f"--insecure-no-auth serves on loopback only (127.0.0.1, ::1), "
                           f"got --host {args.host}: make a key with `kerascnn keys create` instead")
    import uvicorn

    from kerascnn.serve.app import create_app

    app = create_app(args.gallery, model=args.model, detector=args.detector, keys_required=not args.insecure_no_auth,
                     cors_origins=tuple(args.cors_origin), max_request_bytes=int(args.max_request_mb * 1024 * 1024),
                     max_images=args.max_images, batch_wait_ms=args.batch_wait_ms,
                     calibration_file=args.calibration_file)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return EXIT_OK


def _cmd_keys_create(args) -> int:
    from kerascnn.face.gallery import Gallery
    from kerascnn.face.gallery.keys import create_key

    with Gallery(args.gallery) as gallery:
        token = create_key(gallery, args.name, args.scope)
    print_result(args, {"name": args.name, "scope": args.scope, "key": token}, token)
    if not args.json:
        print(f"key {args.name!r} ({args.scope}): shown once, only its hash is stored; send it as "
              "'Authorization: Bearer <key>'", file=sys.stderr)
    return EXIT_OK


def _cmd_keys_list(args) -> int:
    from kerascnn.face.gallery import Gallery
    from kerascnn.face.gallery.keys import list_keys

    with Gallery(args.gallery, create=False) as gallery:
        keys = list_keys(gallery)
    lines = [f"{k.name}\t{k.scope}\tcreated {k.created}" + (f"\trevoked {k.revoked}" if k.revoked else "")
             for k in keys]
    print_result(args, {"keys": [k.to_dict() for k in keys]}, "\n".join(lines) or "no key")
    return EXIT_OK


def _cmd_keys_revoke(args) -> int:
    from kerascnn.face.gallery import Gallery
    from kerascnn.face.gallery.keys import revoke_key

    with Gallery(args.gallery, create=False) as gallery:
        was_valid = revoke_key(gallery, args.name)
    print_result(args, {"name": args.name, "revoked": was_valid},
                 f"revoked key {args.name!r}" if was_valid else f"key {args.name!r} was already revoked")
    return EXIT_OK
