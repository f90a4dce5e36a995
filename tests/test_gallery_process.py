"""Nothing is lost: concurrent enrolling processes, and a process killed mid-enrollment.

The child processes use random embeddings and a fake pipeline, so they never import TensorFlow
(which is itself checked): each starts in well under a second.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kerascnn.face.gallery import Gallery

from _gallery_stores import location, new_location, postgres_server, raw_query, store  # noqa: F401 (fixtures)

REPO = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(REPO))

PIPELINE = r'''
import hashlib, time
from pathlib import Path
from types import SimpleNamespace
import numpy as np

class SlowPipeline:
    """Embeds a file as a random 8-d vector seeded by its bytes, slowly (like a real model)."""
    model = SimpleNamespace(name="fake", weights=[np.zeros(2, np.float32)],
                            inputs=[SimpleNamespace(shape=(None, 16, 16, 3))],
                            outputs=[SimpleNamespace(shape=(None, 8))])

    @staticmethod
    def embedding_of(path):
        seed = int.from_bytes(hashlib.sha256(Path(path).read_bytes()).digest()[:4], "little")
        return np.random.default_rng(seed).normal(size=8).astype(np.float32)

    def embed_images(self, paths, progress=True, strict=False):
        time.sleep(0.02)
        results = [SimpleNamespace(index=i, ok=True, error=None) for i in range(len(paths))]
        return SimpleNamespace(embeddings=np.stack([self.embedding_of(p) for p in paths]), results=results)
'''

CHILD_ENROLL = r'''
import sys
import numpy as np
from kerascnn.face.gallery import Gallery
path, tag, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
rng = np.random.default_rng(int(tag))
with Gallery(path, timeout=60) as g:
    for i in range(n):
        g.enroll(f"p{tag}-{i}", rng.normal(size=(2, 8)).astype(np.float32))
        g.enroll("shared", rng.normal(size=(1, 8)).astype(np.float32))
print("tensorflow" in sys.modules or "keras" in sys.modules)
'''

# The loop of Gallery.enroll_folder (one enroll_images transaction per identity), written out:
# enroll_folder lists the folder with kerascnn.data, whose package imports TensorFlow.
CHILD_FOLDER = PIPELINE + r'''
import os, sys
from kerascnn.face.gallery import Gallery
path, folder = sys.argv[1], sys.argv[2]
with Gallery(path, timeout=60) as g:
    for name in sorted(os.listdir(folder)):
        paths = sorted(os.path.join(folder, name, f) for f in os.listdir(os.path.join(folder, name)))
        g.enroll_images(name, paths, SlowPipeline())
print("done")
'''


@pytest.fixture(autouse=True)
def _seed():
    """Overrides conftest's: no Keras here (its session reset costs about a second per test)."""
    yield


def test_gallery_imports_without_tensorflow():
    code = "import sys, kerascnn.face.gallery; print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_two_processes_enrolling_at_once_keep_every_template(location):
    path, n = location, 40
    children = [
        subprocess.Popen([sys.executable, "-c", CHILD_ENROLL, str(path), tag, str(n)], env=ENV,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for tag in ("1", "2")
    ]  # both also race to create the file
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        assert out.strip() == "False"  # no TensorFlow in the children
    with Gallery(path, create=False) as g:
        counts = {i.name: i.templates for i in g.identities()}
        assert len(g) == 2 * (2 * n + n)
    assert counts.pop("shared") == 2 * n
    assert counts == {f"p{tag}-{i}": 2 for tag in ("1", "2") for i in range(n)}


CHILD_FIRST_ENROLL = r'''
import sys
import numpy as np
from kerascnn.face.gallery import Gallery
with Gallery(sys.argv[1], timeout=20) as g:
    g.enroll("p" + sys.argv[2], np.ones((1, 8), np.float32))
'''


def test_many_processes_creating_the_same_gallery_all_enroll(store, new_location):
    """8 processes opening one new gallery together (SQLite refuses a journal-mode switch that
    races another connection at once, without its busy wait: before the retry about 1 child in 50
    failed; tests/test_gallery.py checks the retry deterministically. PostgreSQL: the schema is
    created under the write lock, once)."""
    for trial in range(6 if store == "sqlite" else 2):
        path = new_location(f"g{trial}")
        children = [subprocess.Popen([sys.executable, "-c", CHILD_FIRST_ENROLL, str(path), str(i)], env=ENV,
                                     stderr=subprocess.PIPE, text=True) for i in range(8)]
        errors = [child.communicate(timeout=120)[1] for child in children]
        assert [child.returncode for child in children] == [0] * 8, "\n".join(errors)
        with Gallery(path, create=False) as g:
            assert sorted(i.name for i in g.identities()) == [f"p{i}" for i in range(8)]


def test_killed_enrollment_keeps_every_committed_identity(tmp_path, location):
    folder, path = tmp_path / "faces", location
    names = [f"person{i:03d}" for i in range(120)]
    for name in names:
        (folder / name).mkdir(parents=True)
        for j in range(3):
            (folder / name / f"{j}.jpg").write_bytes(f"{name} photo {j}".encode())
    child = subprocess.Popen([sys.executable, "-c", CHILD_FOLDER, str(path), str(folder)], env=ENV,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # wait until it is well into the enrollment
            if _committed(path) >= 10:
                break
            assert child.poll() is None, child.stderr.read().decode()
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL

    if isinstance(path, Path):
        assert raw_query(path, "PRAGMA integrity_check") == [("ok",)]
    namespace: dict = {}
    exec(PIPELINE, namespace)
    pipeline = namespace["SlowPipeline"]()
    with Gallery(path, create=False) as g:
        infos = g.identities()
        assert 10 <= len(infos) < len(names)  # killed in the middle
        assert [i.name for i in infos] == names[: len(infos)]  # every committed identity, in order
        assert all(i.templates == 3 for i in infos)  # none half-written
        for info in infos[:: max(1, len(infos) // 5)]:
            expected = [pipeline.embedding_of(folder / info.name / f"{j}.jpg") for j in range(3)]
            assert (g.templates(info.name) == expected).all()

    # the interrupted enrollment, run again, completes without duplicating anything
    done = subprocess.run([sys.executable, "-c", CHILD_FOLDER, str(path), str(folder)], env=ENV,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    with Gallery(path, create=False) as g:
        assert [(i.name, i.templates) for i in g.identities()] == [(name, 3) for name in names]


def _committed(path) -> int:
    """Identities committed so far, read by another connection while the child writes."""
    if not isinstance(path, Path):
        import psycopg

        try:
            return raw_query(path, "SELECT COUNT(*) FROM identities")[0][0]
        except psycopg.errors.UndefinedTable:  # the child has not written the schema yet
            return 0
    if not path.exists():
        return 0
    con = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=5)
    try:
        return con.execute("SELECT COUNT(*) FROM identities").fetchone()[0]
    except sqlite3.OperationalError:  # the child has not written the schema yet
        return 0
    finally:
        con.close()
