"""Helpers of the service tests: ``kerascnn serve`` in a child process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``kerascnn serve`` in a child process on a free loopback port."""

    def __init__(self, gallery, model, *extra: str) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        self.log = open(Path(str(model)).parent / f"server_{self.port}.log", "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "kerascnn", "serve", "--gallery", str(gallery), "--port",
             str(self.port), "--model", str(model), "--detector", "haar", *extra],
            env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"the server exited: {Path(self.log.name).read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.3)
        self.stop()
        raise AssertionError("the server did not answer /healthz within 120 s")

    def stop(self, sig=signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(30)
        self.log.close()

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")
