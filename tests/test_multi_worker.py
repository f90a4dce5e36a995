"""Multi-worker training for real: two processes on loopback ports, one cluster, same weights."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

WORKER = Path(__file__).with_name("_training_worker.py")
TIMEOUT_S = 120


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow
def test_multi_worker_two_processes_end_with_same_weights(tmp_path):
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    procs, outs = [], []
    for index in range(2):
        env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}))
        out = tmp_path / f"worker{index}.npz"
        outs.append(out)
        procs.append(subprocess.Popen(
            [sys.executable, str(WORKER), "multi_worker", str(out), "4"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        ))
    deadline = time.monotonic() + TIMEOUT_S
    errors = []
    for index, proc in enumerate(procs):
        try:
            _, err = proc.communicate(timeout=max(deadline - time.monotonic(), 1))
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            _, err = proc.communicate()
            errors.append(f"worker {index} timed out after {TIMEOUT_S} s:\n{err[-3000:]}")
            continue
        if proc.returncode != 0:
            errors.append(f"worker {index} exited with {proc.returncode}:\n{err[-3000:]}")
    assert not errors, "\n".join(errors)

    first, second = (np.load(out) for out in outs)
    assert int(first["workers"]) == int(second["workers"]) == 2
    keys = [k for k in first.files if k != "workers"]
    assert len(keys) == 8
    for key in keys:
        np.testing.assert_array_equal(first[key], second[key])
    # training changed the weights: the two workers agree on something learned, not on the init
    import keras

    sys.path.insert(0, str(WORKER.parent))
    from _training_worker import tiny_model

    keras.utils.set_random_seed(0)
    initial = tiny_model().get_weights()
    assert not np.allclose(initial[0], first[keys[0]])
