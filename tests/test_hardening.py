"""Hostile and careless input (issue 14): exit codes, special files, pixel caps, names, imports."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kerascnn.cli import EXIT_ERROR, main
from kerascnn.face.gallery import Gallery

IDENTITY = {"name": "fake", "input_size": [16, 16, 3], "embedding_dim": 4, "weights_sha256": "0" * 64}
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _seed():
    """Overrides conftest's: these tests seed their own generators (no Keras session to reset)."""
    yield


@pytest.fixture
def gallery_path(tmp_path):
    path = tmp_path / "g.db"
    with Gallery(path, IDENTITY) as g:
        g.enroll("alice", np.random.default_rng(0).normal(size=(2, 4)))
    return path


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def python(code: str, timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter with this checkout first on the path."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=ROOT, **kwargs)


# --- exit codes -------------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["0", "-3", "two"])
def test_bad_top_k_is_refused_by_the_parser_before_tensorflow(value):
    result = python(
        "import sys\nfrom kerascnn.cli import main\n"
        f"try:\n    main(['identify', '--gallery', 'g.db', 'x.jpg', '--top-k', {value!r}])\n"
        "except SystemExit as e:\n    print(e.code, 'tensorflow' in sys.modules)\n")
    assert result.stdout.split() == ["2", "False"], result
    assert "--top-k" in result.stderr


@pytest.mark.parametrize("argv", [
    ["verify", "--gallery", "g.db", "alice", "x.jpg", "--threshold", "nan"],
    ["identify", "--gallery", "g.db", "x.jpg", "--threshold=inf"],
    ["demo", "--threshold=-inf"],
])
def test_a_non_finite_threshold_is_an_error_not_a_decision(capsys, argv):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == EXIT_ERROR
    message = capsys.readouterr().err.strip()
    assert re.search(r"argument --threshold: must be a finite number, got -?(nan|inf)$", message), message


FACE_COMMANDS = {
    "enroll": ["enroll", "--gallery", "g.db", "alice", "a.jpg"],
    "verify": ["verify", "--gallery", "g.db", "alice", "a.jpg"],
    "identify": ["identify", "--gallery", "g.db", "a.jpg"],
    "calibrate": ["calibrate"],
    "evaluate": ["evaluate", "--pairs", "pairs.txt", "--images", "lfw"],
    "demo": ["demo"],
    "finetune-face": ["finetune-face", "--data", "people", "--out", "run"],
}


@pytest.mark.parametrize("command", sorted(FACE_COMMANDS))
def test_every_face_command_takes_one_detector_option(capsys, command):
    """--detector takes haar, yunet or a YuNet file everywhere; --detector-model FILE, the old
    name of some commands, still means --detector FILE but is no longer shown."""
    from kerascnn.cli import build_parser

    parser = build_parser()
    argv = FACE_COMMANDS[command]
    for value in ("haar", "yunet", "models/yunet.onnx"):
        assert parser.parse_args([*argv, "--detector", value]).detector == value
    assert parser.parse_args([*argv, "--detector-model", "old/yunet.onnx"]).detector == "old/yunet.onnx"
    assert parser.parse_args(argv).detector is None  # the default detector, as before
    with pytest.raises(SystemExit):
        main([command, "--help"])
    shown = capsys.readouterr().out
    assert "--detector haar|yunet|YUNET.onnx" in shown and "--detector-model" not in shown


def test_negative_timeout_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit) as info:
        main(["list", "--gallery", "g.db", "--timeout", "-1"])
    assert info.value.code == EXIT_ERROR
    assert "--timeout" in capsys.readouterr().err


def test_unexpected_exception_is_one_line_exit_2(capsys, monkeypatch, gallery_path):
    def boom(*args, **kwargs):
        raise RuntimeError("something\nbroke")
    monkeypatch.setattr(Gallery, "identities", boom)
    code, out, err = run(capsys, "list", "--gallery", gallery_path)
    assert code == EXIT_ERROR
    assert err.strip() == "kerascnn list: error: RuntimeError: something broke"
    code, out, err = run(capsys, "list", "--gallery", gallery_path, "--json")
    assert code == EXIT_ERROR and err == ""
    assert json.loads(out) == {"error": "RuntimeError: something broke", "type": "RuntimeError"}
    code, out, err = run(capsys, "list", "--gallery", gallery_path, "--verbose")
    assert code == EXIT_ERROR and "Traceback" in err and "boom" in err
    assert err.strip().splitlines()[-1] == "kerascnn list: error: RuntimeError: something broke"
    code, out, err = run(capsys, "--verbose", "list", "--gallery", gallery_path)
    assert code == EXIT_ERROR and "Traceback" in err


def test_json_errors_are_json(capsys, tmp_path):
    code, out, err = run(capsys, "list", "--gallery", tmp_path / "missing.db", "--json")
    assert code == EXIT_ERROR
    data = json.loads(out)
    assert data["type"] == "GalleryNotFoundError" and "missing.db" in data["error"]


def test_export_onto_a_directory_is_a_clear_error(capsys, gallery_path, tmp_path):
    (tmp_path / "out.json").mkdir()
    code, out, err = run(capsys, "export", "--gallery", gallery_path, tmp_path / "out.json")
    assert code == EXIT_ERROR
    assert len(err.strip().splitlines()) == 1 and "is a directory" in err, err


# --- image files: regular files only, pixel cap from the header, EXIF orientation -------------------
def test_directory_and_symlink_loop_as_images_are_clear_errors(capsys, gallery_path, tmp_path):
    from kerascnn.data.folders import read_image
    from kerascnn.errors import ImageReadError

    (tmp_path / "x.jpg").mkdir()
    with pytest.raises(ImageReadError, match=r"x\.jpg: it is a directory"):
        read_image(tmp_path / "x.jpg")
    (tmp_path / "loop.jpg").symlink_to(tmp_path / "loop.jpg")
    with pytest.raises(ImageReadError, match="loop.jpg: Too many levels of symbolic links"):
        read_image(tmp_path / "loop.jpg")


def test_fifo_and_device_are_refused_at_once(tmp_path):
    fifo = tmp_path / "photo.jpg"
    os.mkfifo(fifo)
    result = python(  # in a child: a regression hangs there (killed by the timeout), not here
        "from kerascnn.data.folders import read_image\n"
        f"for path in ({str(fifo)!r}, '/dev/zero'):\n"
        "    try:\n        read_image(path)\n    except Exception as e:\n        print(type(e).__name__, e)\n",
        timeout=30)
    lines = result.stdout.strip().splitlines()
    assert lines == [f"ImageReadError cannot read image file {fifo}: it is a FIFO (named pipe), not a regular file",
                     "ImageReadError cannot read image file /dev/zero: it is a device, not a regular file"], result


def _tiff_header(width: int, height: int) -> bytes:
    """A little-endian TIFF of ``width x height`` 8-bit RGB whose one strip holds 64 zero bytes."""
    entries = [(256, 4, width), (257, 4, height), (258, 3, 8), (259, 3, 1), (262, 3, 2),
               (273, 4, 8 + 2 + 12 * 10 + 4), (277, 3, 3), (278, 4, height), (279, 4, 64), (284, 3, 1)]
    ifd = len(entries).to_bytes(2, "little") + b"".join(
        tag.to_bytes(2, "little") + kind.to_bytes(2, "little") + (1).to_bytes(4, "little")
        + value.to_bytes(4, "little") for tag, kind, value in entries) + b"\0\0\0\0"
    return b"II*\x00" + (8).to_bytes(4, "little") + ifd + bytes(64)


def _jpeg_with_comments(width: int, height: int, comment_bytes: int) -> bytes:
    """A small real JPEG whose size marker says ``width x height``, after ``comment_bytes`` of COM segments."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (120, 80, 40)).save(buffer, "JPEG")
    data = buffer.getvalue()
    sof = data.index(b"\xff\xc0")
    data = data[:sof + 5] + height.to_bytes(2, "big") + width.to_bytes(2, "big") + data[sof + 9:]
    segment = b"\xff\xfe" + (65535).to_bytes(2, "big") + b"c" * 65533
    return data[:2] + segment * (comment_bytes // len(segment) + 1) + data[2:]


MEMORY_LIMITED = """
import resource, sys
from kerascnn.data.folders import read_image
vm = int(open('/proc/self/status').read().split('VmSize:')[1].split()[0]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (vm + 300 * 2**20, resource.RLIM_INFINITY))  # 300 MB more
for path in sys.argv[1:]:
    try:
        read_image(path)
        print('read', path)
    except Exception as e:
        print(type(e).__name__, str(e)[:200])
"""


def test_bombs_of_any_format_are_refused_from_the_header_under_a_memory_limit(tmp_path):
    tiff, jpeg, junk = tmp_path / "bomb.tif", tmp_path / "bomb.jpg", tmp_path / "junk.png"
    tiff.write_bytes(_tiff_header(30000, 30000))
    jpeg.write_bytes(_jpeg_with_comments(12000, 12000, comment_bytes=200_000))
    junk.write_bytes(b"not an image at all" * 10)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-c", MEMORY_LIMITED, str(tiff), str(jpeg), str(junk)],
                            capture_output=True, text=True, timeout=60, env=env)
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 3, result
    assert lines[0].startswith("ImageTooLargeError") and ("30000x30000" in lines[0] or "900000000" in lines[0]), lines
    assert lines[1].startswith("ImageTooLargeError") and "12000x12000" in lines[1], lines
    assert lines[2].startswith("ImageReadError") and "dimensions cannot be read" in lines[2], lines


def test_image_bytes_in_memory_get_the_checks_and_messages_of_image_files(tmp_path, orl_dir):
    """An upload is decoded from memory (the service never writes it to disk) with read_image's checks."""
    from kerascnn.data.folders import read_image, read_image_bytes
    from kerascnn.errors import ImageReadError, ImageTooLargeError

    cases = {"bomb.tif": _tiff_header(30000, 30000), "bomb.jpg": _jpeg_with_comments(12000, 12000, 200_000),
             "junk.png": b"not an image at all" * 10, "cut.jpg": _jpeg_with_comments(16, 16, 0)[:200]}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises((ImageReadError, ImageTooLargeError)) as from_file:
            read_image(tmp_path / name)
        with pytest.raises(type(from_file.value)) as from_bytes:
            read_image_bytes(data, "upload.x")
        assert str(from_bytes.value) == str(from_file.value).replace(str(tmp_path / name), "upload.x")
    with pytest.raises(ImageReadError, match="cannot read image upload.x: it is empty"):
        read_image_bytes(b"", "upload.x")
    photo = orl_dir / "s1" / "1.pgm"
    np.testing.assert_array_equal(read_image_bytes(photo.read_bytes()), read_image(photo))


def test_jpeg_with_comments_under_the_cap_still_reads(tmp_path):
    from kerascnn.data.folders import read_image

    path = tmp_path / "ok.jpg"
    path.write_bytes(_jpeg_with_comments(16, 16, comment_bytes=100_000))
    image = read_image(path)
    assert image.shape == (16, 16, 3) and abs(int(image[8, 8, 0]) - 120) < 6


def test_sixteen_bit_images_are_scaled_like_the_float_reference(tmp_path):
    import cv2

    from kerascnn.data.folders import read_image

    values = np.random.default_rng(1).integers(0, 65536, size=(9, 7), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "g16.png"), values)
    expected = np.round(values / 257.0).astype(np.uint8)
    np.testing.assert_array_equal(read_image(tmp_path / "g16.png", channels=1)[:, :, 0], expected)


def test_exif_orientation_is_applied(tmp_path):
    from PIL import Image, ImageOps

    from kerascnn.data.folders import read_image

    pixels = np.zeros((32, 64, 3), np.uint8)  # wide, left half white: rotated it is tall
    pixels[:, :32] = 255
    pixels[:8, :, 1] = 128
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = tmp_path / "phone.jpg"
    Image.fromarray(pixels).save(path, "JPEG", exif=exif, quality=95)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
    assert expected.shape == (64, 32, 3)
    image = read_image(path)
    assert image.shape == expected.shape
    assert np.abs(image.astype(int) - expected).mean() < 3


# --- names ------------------------------------------------------------------------------------
def _unit(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 4))


def test_names_are_one_identity_in_nfc_and_nfd(tmp_path):
    nfc, nfd = "Ren\u00e9", "Rene\u0301"
    with Gallery(tmp_path / "g.db", IDENTITY) as g:
        g.enroll(nfc, _unit(1, 0))
        g.enroll(nfd, _unit(1, 1))
        assert [(i.name, i.templates) for i in g.identities()] == [(nfc, 2)]
        assert nfd in g and g.templates(nfd).shape == (2, 4)
        g.rename(nfd, "Zoe\u0308")  # an NFD new name is stored in NFC
        assert [i.name for i in g.identities()] == ["Zo\u00eb"]
        assert g.remove("Zoe\u0308") == 2 and g.identities() == []


def test_surrounding_whitespace_is_not_part_of_a_name(tmp_path):
    with Gallery(tmp_path / "g.db", IDENTITY) as g:
        g.enroll("  bob  ", _unit(1, 0))
        g.enroll("bob\u00a0", _unit(1, 1))  # a no-break space too
        assert [(i.name, i.templates) for i in g.identities()] == [("bob", 2)]
        assert " bob" in g and g.templates("bob ").shape == (2, 4)
        g.rename(" bob", "  robert ")
        assert [i.name for i in g.identities()] == ["robert"]
        with pytest.raises(ValueError, match="is blank"):  # only whitespace: still no name
            g.enroll(" \u00a0 ", _unit(1, 2))


@pytest.mark.parametrize("name, code_point", [
    ("eve\u202egnp.exe", "U+202E"),   # right-to-left override (Cf)
    ("zero\u200bwidth", "U+200B"),    # zero-width space (Cf)
    ("c1\u0085ctl", "U+0085"),        # C1 control: next line (Cc)
    ("tab\there", "U+0009"),          # C0 control (Cc)
])
def test_control_and_format_characters_are_refused_with_their_code_point(tmp_path, name, code_point):
    from kerascnn.errors import GalleryInputError

    with Gallery(tmp_path / "g.db", IDENTITY) as g:
        with pytest.raises(GalleryInputError, match=re.escape(code_point)):
            g.enroll(name, _unit(1))
        g.enroll("alice", _unit(1))
        with pytest.raises(GalleryInputError, match=re.escape(code_point)):
            g.rename("alice", name)
        with pytest.raises(GalleryInputError, match=re.escape(code_point)):
            g.remove(name)
        assert [i.name for i in g.identities()] == ["alice"]


def test_empty_name_has_its_own_message(capsys, gallery_path):
    code, out, err = run(capsys, "remove", "--gallery", gallery_path, "")
    assert code == EXIT_ERROR and "identity name is empty" in err, err


def test_verify_finds_an_nfd_claim(tmp_path):
    from kerascnn.face.decision import verify

    with Gallery(tmp_path / "g.db", IDENTITY) as g:
        templates = _unit(2)
        g.enroll("Ren\u00e9", templates)
        result = verify(g, "Rene\u0301", templates[0].astype(np.float32), 0.5)
    assert result.match and result.score == pytest.approx(1.0, abs=1e-5)


# --- export and import ----------------------------------------------------------------------------
def test_export_never_overwrites_the_gallery_and_needs_force(capsys, tmp_path):
    path = tmp_path / "g.json"  # a gallery whose name looks like an export
    with Gallery(path, IDENTITY) as g:
        g.enroll("alice", _unit(2))
    for target in (path, tmp_path / "." / "g.json"):
        code, out, err = run(capsys, "export", "--gallery", path, target, "--force")
        assert code == EXIT_ERROR and "onto itself" in err, err
    with Gallery(path, create=False) as g:
        assert [(i.name, i.templates) for i in g.identities()] == [("alice", 2)]
    out_file = tmp_path / "out.npz"
    out_file.write_bytes(b"precious")
    code, out, err = run(capsys, "export", "--gallery", path, out_file)
    assert code == EXIT_ERROR and "already exists: pass --force" in err, err
    assert out_file.read_bytes() == b"precious"
    code, out, err = run(capsys, "export", "--gallery", path, out_file, "--force")
    assert code == 0 and np.load(out_file)["embeddings"].shape == (2, 4)


def _export(tmp_path, name="e.json", n=2) -> Path:
    source = tmp_path / f"source-{name}.db"
    with Gallery(source, IDENTITY) as g:
        g.enroll("alice", _unit(n))
        g.export(tmp_path / name)
    return tmp_path / name


def _assert_refused(path, error, pattern):
    with Gallery(path.parent / f"target-{path.name}.db", IDENTITY) as g:
        with pytest.raises(error, match=pattern):
            g.import_(path)
        assert len(g) == 0 and g.identities() == []


def test_import_refuses_a_null_model_identity(tmp_path):
    from kerascnn.errors import GalleryCorruptError

    path = _export(tmp_path)
    data = json.loads(path.read_text())
    data["model_identity"] = None
    path.write_text(json.dumps(data))
    _assert_refused(path, GalleryCorruptError, "names no model identity")


@pytest.mark.parametrize("column", ["names", "sources", "created", "identity_created"])
def test_import_refuses_npz_columns_shorter_than_the_templates(tmp_path, column):
    from kerascnn.errors import GalleryCorruptError

    path = _export(tmp_path, "e.npz", n=3)
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    arrays[column] = arrays[column][:2]
    np.savez(path, **arrays)
    _assert_refused(path, GalleryCorruptError, rf"{column} has shape \(2,\), expected \(3,\)")


@pytest.mark.parametrize("embedding, what", [([0.5, 0.5, 0.5], "ragged"), (["a", "b", "c", "d"], "text"),
                                             ([True, 0.0, 1.0, 0.0], "booleans")])
def test_import_refuses_ragged_or_non_numeric_json(tmp_path, embedding, what):
    from kerascnn.errors import GalleryCorruptError

    path = _export(tmp_path)
    data = json.loads(path.read_text())
    data["templates"][1]["embedding"] = embedding
    path.write_text(json.dumps(data))
    _assert_refused(path, GalleryCorruptError, "template 1 of 'alice' is not 4 numbers")


def test_import_caps_json_size_and_template_count(tmp_path, monkeypatch):
    from kerascnn.errors import GalleryInputError
    from kerascnn.face.gallery import fileformat

    path = _export(tmp_path, n=3)
    monkeypatch.setattr(fileformat, "MAX_JSON_BYTES", path.stat().st_size - 1)
    _assert_refused(path, GalleryInputError, "above the import cap .* export the gallery as .npz")
    monkeypatch.undo()
    monkeypatch.setattr(fileformat, "MAX_TEMPLATES", 2)
    _assert_refused(path, GalleryInputError, "holds 3 templates, above the import cap of 2")
    npz = _export(tmp_path, "e.npz", n=3)
    _assert_refused(npz, GalleryInputError, "holds 3 templates, above the import cap of 2")


NPZ_BOMB = """
import resource, sys
from pathlib import Path
from kerascnn.face.gallery import Gallery
vm = int(open('/proc/self/status').read().split('VmSize:')[1].split()[0]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (vm + 500 * 2**20, resource.RLIM_INFINITY))  # 500 MB more
identity = {"name": "fake", "input_size": [16, 16, 3], "embedding_dim": 1024, "weights_sha256": "0" * 64}
with Gallery(Path(sys.argv[1]).with_suffix(".db"), identity) as g:
    try:
        g.import_(sys.argv[1])
        print("imported")
    except BaseException as e:
        print(type(e).__name__, str(e)[:300])
"""


def test_npz_member_shapes_are_checked_from_their_headers_under_a_memory_limit(tmp_path):
    import io
    import zipfile

    from numpy.lib import format as npy

    identity = dict(IDENTITY, embedding_dim=1024)
    n = 500_000  # 500000 x 1024 float32: 2 GB from a few hundred bytes
    meta = {"format": "kerascnn-gallery", "version": 1, "model_identity": identity, "embedding_dim": 1024,
            "created": "t", "empty_identities": []}
    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w") as archive:
        for key, value in [("metadata", np.array(json.dumps(meta))), ("names", np.array(["a"] * 3)),
                           ("identity_created", np.array(["t"] * 3)), ("sources", np.array([""] * 3)),
                           ("created", np.array(["t"] * 3))]:
            buffer = io.BytesIO()
            np.save(buffer, value)
            archive.writestr(f"{key}.npy", buffer.getvalue())
        buffer = io.BytesIO()
        npy.write_array_header_1_0(buffer, {"descr": "<f4", "fortran_order": False, "shape": (n, 1024)})
        archive.writestr("embeddings.npy", buffer.getvalue() + bytes(4096))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-c", NPZ_BOMB, str(path)], capture_output=True, text=True,
                            timeout=60, env=env)
    assert result.stdout.startswith("GalleryInputError"), result
    assert "above the import cap" in result.stdout, result.stdout


# --- damaged galleries --------------------------------------------------------------------------
def test_nan_templates_are_refused_when_loaded(tmp_path):
    import sqlite3

    from kerascnn.errors import GalleryCorruptError

    path = tmp_path / "g.db"
    with Gallery(path, IDENTITY) as g:
        g.enroll("alice", _unit(1, 0))
        g.enroll("bob", _unit(1, 1))
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE templates SET embedding = ? WHERE identity_id = (SELECT id FROM identities "
                     "WHERE name = 'bob')", (np.full(4, np.nan, "<f4").tobytes(),))
    conn.close()
    with Gallery(path, IDENTITY, create=False) as g:
        with pytest.raises(GalleryCorruptError, match="templates of 'bob' hold NaN"):
            g.search(_unit(1, 1).astype(np.float32), k=2)
        with pytest.raises(GalleryCorruptError, match="NaN or infinity"):
            g.templates("bob")


def test_enroll_refuses_a_gallery_with_damaged_pages(tmp_path):
    from kerascnn.errors import GalleryCorruptError

    path = tmp_path / "g.db"
    with Gallery(path, IDENTITY) as g:
        for i in range(300):
            g.enroll(f"person{i}", _unit(1, i))
    data = bytearray(path.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    assert len(data) >= 6 * page
    data[4 * page:5 * page] = b"\xff" * page  # one page of the tables, overwritten
    path.write_bytes(bytes(data))
    with Gallery(path, IDENTITY, create=False) as g:
        with pytest.raises(GalleryCorruptError, match="quick_check"):
            g.enroll("new", _unit(1, 999))


# --- gallery files are ours ------------------------------------------------------------------------
@pytest.mark.parametrize("mode", [0o666, 0o644, 0o620])
def test_gallery_readable_or_writable_by_others_is_refused(capsys, gallery_path, mode):
    from kerascnn.errors import GalleryPermissionError

    os.chmod(gallery_path, mode)
    with pytest.raises(GalleryPermissionError, match=rf"mode 0{mode:o}\): run `chmod 600 "):
        Gallery(gallery_path, IDENTITY, create=False)
    code, out, err = run(capsys, "list", "--gallery", gallery_path)
    assert code == EXIT_ERROR and "chmod 600" in err


def test_planted_empty_file_of_another_user_is_not_adopted(tmp_path, monkeypatch):
    from kerascnn.errors import GalleryPermissionError

    path = tmp_path / "g.db"
    path.touch()
    os.chmod(path, 0o600)
    monkeypatch.setattr(os, "geteuid", lambda: path.stat().st_uid + 1)  # as seen by another user
    with pytest.raises(GalleryPermissionError, match="owned by another user"):
        Gallery(path, IDENTITY)
    assert path.stat().st_size == 0  # left untouched


# --- folder enrollment: bad items are skipped and reported ------------------------------------------
class _FakePipeline:
    """A face pipeline without TensorFlow: the embedding of an image is derived from its bytes;
    files starting with b"bad" give no face."""

    def __init__(self, *args, **kwargs):
        from types import SimpleNamespace

        self.model = SimpleNamespace(name="fake", weights=[], inputs=None, input_shape=(None, 16, 16, 3),
                                     outputs=[SimpleNamespace(shape=(None, 4))])

    def embed_images(self, paths, progress=False, strict=False):
        from types import SimpleNamespace

        from kerascnn.errors import NoFaceError

        results, rows = [], []
        for i, path in enumerate(paths):
            data = Path(path).read_bytes()
            if data.startswith(b"bad"):
                if strict:
                    raise NoFaceError(f"no face found in {path}")
                results.append(SimpleNamespace(index=i, ok=False, error=NoFaceError(f"no face found in {path}")))
                rows.append(np.full(4, np.nan, np.float32))
            else:
                results.append(SimpleNamespace(index=i, ok=True, error=None))
                rows.append(np.frombuffer(data[:16].ljust(16, b"x"), np.uint8)[:4].astype(np.float32) + 1)
        return SimpleNamespace(results=results, embeddings=np.stack(rows))


def _folder(tmp_path, people: dict) -> Path:
    root = tmp_path / "faces"
    for name, files in people.items():
        (root / name).mkdir(parents=True)
        for i, content in enumerate(files):
            (root / name / f"{i}.jpg").write_bytes(content)
    return root


def test_folder_enrollment_skips_bad_names_and_images(tmp_path):
    root = _folder(tmp_path, {"alice": [b"good-a1", b"good-a2"], "bad\u202ename": [b"good-x"],
                              "carol": [b"bad image"]})
    from kerascnn.face.faces import Faces

    with Faces(tmp_path / "g.db", pipeline=_FakePipeline()) as faces:
        report = faces.enroll_folder(root, progress=False)
        assert report.enrolled == {"alice": 2}
        assert faces.people() == ["alice"]
    failures = dict(report.failures)
    assert "U+202E" in failures[str(root / "bad\u202ename")]
    assert "no face found" in failures[str(root / "carol" / "0.jpg")]


def test_folder_enrollment_exits_2_only_when_nothing_was_enrolled(capsys, tmp_path, monkeypatch):
    import kerascnn.face.pipeline

    monkeypatch.setattr(kerascnn.face.pipeline, "FacePipeline", _FakePipeline)
    bad = _folder(tmp_path / "bad", {"carol": [b"bad image"], "dave\u0007": [b"good"]})
    code, out, err = run(capsys, "enroll", "--gallery", tmp_path / "g.db", "--folder", bad, "--json")
    assert code == EXIT_ERROR and "nothing enrolled" in err
    assert json.loads(out)["nothing_enrolled"] is True and len(json.loads(out)["failures"]) == 2
    good = _folder(tmp_path / "good", {"carol": [b"bad image"], "erin": [b"good-e"]})
    code, out, err = run(capsys, "enroll", "--gallery", tmp_path / "g.db", "--folder", good)
    assert code == 0 and "enrolled 1 identities, 1 templates" in out and "skipped" in out
    code, out, err = run(capsys, "enroll", "--gallery", tmp_path / "g.db", "--folder", good)
    assert code == 0 and "1 images already enrolled" in out  # a rerun is not a failure


# --- photos with several faces ------------------------------------------------------------------
def test_several_faces_are_counted_and_the_used_box_reported(lfw_dir):
    from _face_helpers import tiny_embedder, two_faces

    from kerascnn.cli.face import _faces_note
    from kerascnn.face.pipeline import FacePipeline

    image, _, _ = two_faces(lfw_dir)
    boxes = [(310, 60, 140, 140, 0.9), (10, 20, 220, 220, 0.8), (600, 100, 30, 30, 0.5)]
    pipeline = FacePipeline(detector=lambda rgb: boxes, model=tiny_embedder(32))
    _, face = pipeline.embed_one(image)
    data = face.to_dict()
    assert data["faces_found"] == 3 and tuple(face.box) == (10, 20, 220, 220)  # the largest
    assert _faces_note(face, "largest") == "\n  note: 3 faces found, used the largest (box x=10 y=20 w=220 h=220)"
    _, single = FacePipeline(detector=lambda rgb: boxes[:1], model=pipeline.model).embed_one(image)
    assert single.to_dict()["faces_found"] == 1 and _faces_note(single, "largest") == ""


def test_gallery_in_a_read_only_folder_is_searched_without_creating_files(tmp_path, monkeypatch):
    folder = tmp_path / "ro"
    folder.mkdir()
    path = folder / "g.db"
    with Gallery(path, IDENTITY) as g:
        g.enroll("alice", _unit(1, 0))
        g.enroll("bob", _unit(1, 1))
    assert sorted(p.name for p in folder.iterdir()) == ["g.db"]  # checkpointed on close
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == folder and mode == os.W_OK
                        else real_access(p, mode))  # the folder as a non-root user would see it (0555)
    with Gallery(path, IDENTITY, create=False, read_only=True) as g:
        names, _ = g.search(_unit(1, 1).astype(np.float32), k=1)
        assert names[0, 0] == "bob"
    assert sorted(p.name for p in folder.iterdir()) == ["g.db"]  # no -shm/-wal needed


def test_verify_select_central_reaches_the_pipeline_and_is_reported(capsys, tmp_path, monkeypatch):
    import kerascnn.face.pipeline
    from kerascnn.face.detect import Detection
    from kerascnn.face.gallery import model_identity
    from kerascnn.face.pipeline import FaceResult

    chosen = {}

    class Pipeline(_FakePipeline):
        def __init__(self, detector=None, model=None, select="largest", single=False):
            super().__init__()
            chosen["select"] = select

        def embed_one(self, image):
            face = FaceResult(0, str(image), alignment="box", detection=Detection((5, 6, 30, 40)), faces_found=2)
            return np.ones(4, np.float32) / 2, face

    monkeypatch.setattr(kerascnn.face.pipeline, "FacePipeline", Pipeline)
    path = tmp_path / "g.db"
    with Gallery(path, model_identity(Pipeline().model)) as g:
        g.enroll("alice", np.ones((1, 4)))
    code, out, err = run(capsys, "verify", "--gallery", path, "alice", "probe.jpg", "--threshold", "0.5",
                         "--select", "central")
    assert code == 0 and chosen["select"] == "central", err
    assert out.strip().endswith("note: 2 faces found, used the central (box x=5 y=6 w=30 h=40)")
    code, out, err = run(capsys, "verify", "--gallery", path, "alice", "probe.jpg", "--threshold", "0.5", "--json")
    face = json.loads(out)["face"]
    assert chosen["select"] == "largest" and face["faces_found"] == 2 and face["box"] == [5, 6, 30, 40]


def test_a_new_gallery_keeps_what_was_committed_when_the_enrollment_dies(tmp_path):
    from kerascnn.face.gallery import open_gallery

    path = tmp_path / "new.db"
    with pytest.raises(KeyboardInterrupt):
        with open_gallery(path, IDENTITY) as g:
            g.enroll("alice", _unit(1, 0))
            g.enroll("bob", _unit(1, 1))
            raise KeyboardInterrupt  # killed in the middle of a folder
    with Gallery(path, IDENTITY, create=False) as g:
        assert [i.name for i in g.identities()] == ["alice", "bob"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.db"]  # no temporary file left


def test_stale_temporary_files_of_a_killed_creation_are_removed(tmp_path):
    from kerascnn.face.gallery import open_gallery

    stale, fresh = tmp_path / ".new.db.abc123.creating", tmp_path / ".new.db.def456.creating"
    for leftover in (stale, Path(f"{stale}-wal"), fresh):
        leftover.write_bytes(b"")
    old = os.stat(stale).st_mtime - 3600
    os.utime(stale, (old, old))
    os.utime(f"{stale}-wal", (old, old))
    with open_gallery(tmp_path / "new.db", IDENTITY) as g:
        g.enroll("alice", _unit(1))
    assert sorted(p.name for p in tmp_path.iterdir()) == [fresh.name, "new.db"]  # a fresh one may be another's
