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

# The loop of Faces.enroll_folder (one enroll transaction per identity), written out:
# enroll_folder lists the folder with kerascnn.data, whose package imports TensorFlow.
CHILD_FOLDER = PIPELINE + r'''
import os, sys
from kerascnn.face.faces import Faces
from kerascnn.face.gallery import Gallery
path, folder = sys.argv[1], sys.argv[2]
with Faces(Gallery(path, timeout=60), pipeline=SlowPipeline()) as faces:
    for name in sorted(os.listdir(folder)):
        paths = sorted(os.path.join(folder, name, f) for f in os.listdir(os.path.join(folder, name)))
        faces.enroll(name, paths)
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


@pytest.mark.slow
def test_many_processes_creating_the_same_gallery_all_enroll(store, new_location):
    """8 processes opening one new gallery together (SQLite refuses a journal-mode switch that
    races another connection at once, without its busy wait: before the retry about 1 child in 50
    failed; tests/test_gallery.py checks the retry deterministically. PostgreSQL: the schema is
    created under the write lock, once)."""
    for trial in range(6 if store == "sqlite" else 1):
        path = new_location(f"g{trial}")
        children = [subprocess.Popen([sys.executable, "-c", CHILD_FIRST_ENROLL, str(path), str(i)], env=ENV,
                                     stderr=subprocess.PIPE, text=True) for i in range(8)]
        errors = [child.communicate(timeout=120)[1] for child in children]
        assert [child.returncode for child in children] == [0] * 8, "\n".join(errors)
        with Gallery(path, create=False) as g:
            assert sorted(i.name for i in g.identities()) == [f"p{i}" for i in range(8)]


@pytest.mark.slow
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


CHILD_EDIT = r'''
import sys
import numpy as np
from kerascnn.face.gallery import Gallery
path, action, name = sys.argv[1:4]
with Gallery(path, create=False, timeout=30) as g:
    if action == "enroll":
        g.enroll(name, np.random.default_rng(int(sys.argv[4])).normal(size=(2, 8)).astype(np.float32))
    elif action == "remove":
        g.remove(name)
    elif action == "churn":  # enroll n people, removing every other one right after
        for i in range(int(sys.argv[4])):
            g.enroll(f"{name}{i}", np.random.default_rng(100 + i).normal(size=(2, 8)).astype(np.float32))
            if i % 2:
                g.remove(f"{name}{i}")
'''


def _edit(path, *args):
    done = subprocess.run([sys.executable, "-c", CHILD_EDIT, str(path), *map(str, args)], env=ENV,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


@pytest.mark.slow
def test_another_process_changes_reach_the_next_search(location):
    """Process A enrolls and removes; process B's next search sees it, from its updated index."""
    import numpy as np

    rng = np.random.default_rng
    with Gallery(location, timeout=30) as searcher:
        searcher.enroll("base", rng(1).normal(size=(1, 8)).astype(np.float32))
        alice = rng(7).normal(size=(2, 8)).astype(np.float32)  # what the child enrolls for alice
        assert searcher.search(alice)[0].tolist() == [["base"], ["base"]]
        index = searcher._cache
        _edit(location, "enroll", "alice", 7)
        assert searcher.search(alice)[0].tolist() == [["alice"], ["alice"]]
        assert searcher._cache is index and index.last_fetched == 2  # alice's templates only
        _edit(location, "remove", "alice")
        assert searcher.search(alice, k=5)[0].tolist() == [["base"], ["base"]]  # removed: never returned

        churn = subprocess.Popen([sys.executable, "-c", CHILD_EDIT, str(location), "churn", "c", "30"], env=ENV,
                                 stderr=subprocess.PIPE, text=True)
        probes = np.concatenate([rng(100 + i).normal(size=(2, 8)).astype(np.float32) for i in range(30)])
        while churn.poll() is None:  # search while the other process writes
            searcher.search(probes, k=3)
        assert churn.wait() == 0, churn.stderr.read()
        names, scores = searcher.search(probes, k=3)
        with Gallery(location, create=False) as fresh:
            expected = fresh.search(probes, k=3)
        assert names.tolist() == expected[0].tolist()
        np.testing.assert_allclose(scores, expected[1], atol=1e-6)
        removed = {f"c{i}" for i in range(1, 30, 2)}
        assert not removed & set(names.ravel())
        assert [names[2 * i, 0] for i in range(0, 30, 2)] == [f"c{i}" for i in range(0, 30, 2)]  # kept: found


@pytest.mark.slow
def test_server_gone_mid_enrollment_then_back_completes_it(tmp_path, postgres_server):
    """PostgreSQL stopped in the middle of a folder enrollment: the child fails with a clear
    message, every committed identity is whole, and a rerun once the server is back completes
    the enrollment without duplicates; an open gallery reconnects by itself."""
    from kerascnn.errors import GalleryConnectionError

    database = postgres_server.new_database()
    url = postgres_server.url(database)
    folder = tmp_path / "faces"
    names = [f"person{i:03d}" for i in range(120)]
    for name in names:
        (folder / name).mkdir(parents=True)
        for j in range(3):
            (folder / name / f"{j}.jpg").write_bytes(f"{name} photo {j}".encode())
    child = subprocess.Popen([sys.executable, "-c", CHILD_FOLDER, url, str(folder)], env=ENV,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and _committed(url) < 10:
            assert child.poll() is None, child.stderr.read()
            time.sleep(0.05)
        with Gallery(url, create=False) as survivor:
            postgres_server.stop("fast")  # the server goes away mid-enrollment
            _, err = child.communicate(timeout=60)
            assert child.returncode != 0
            assert "GalleryConnectionError" in err and "run it again once the server is back" in err, err
            assert "s3cret" not in err  # no password in the message
            with pytest.raises(GalleryConnectionError, match="cannot reach the server or lost the connection"):
                survivor.identities()
            postgres_server.start()
            infos = survivor.identities()  # reconnected
        assert 10 <= len(infos) < len(names)
        assert [i.name for i in infos] == names[: len(infos)] and all(i.templates == 3 for i in infos)
    finally:
        if child.poll() is None:
            child.kill()
        if not _running(postgres_server):
            postgres_server.start()
    done = subprocess.run([sys.executable, "-c", CHILD_FOLDER, url, str(folder)], env=ENV,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    with Gallery(url, create=False) as g:
        assert [(i.name, i.templates) for i in g.identities()] == [(name, 3) for name in names]
    postgres_server.drop_database(database)


def _running(server) -> bool:
    try:
        raw_query(server.url(), "SELECT 1")
        return True
    except Exception:  # noqa: BLE001 (any failure to connect means: not running)
        return False
