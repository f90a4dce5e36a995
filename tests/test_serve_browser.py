"""The service's web page in a real headless Chromium (issue 18): enroll two ORL people through the
page, identify a held-back photo of each and a stranger, remove one; what the page shows is
what the library decides."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

pytest.importorskip("fastapi")
playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the 'dev' extra)")

from _serve_helpers import Server  # noqa: E402
from kerascnn.face.faces import Faces  # noqa: E402
from kerascnn.face.gallery import Gallery  # noqa: E402
from kerascnn.face.gallery.keys import create_key  # noqa: E402
from kerascnn.face.model import save_calibration  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
THRESHOLD = 0.8  # s1 and s2's held-back photos score above it, the stranger s31 below (checked below too)


def pixel_embedder(size: int = 32):
    """A deterministic embedder good enough to tell ORL people apart: mean-centred 8x8 pixels."""
    import keras

    inputs = keras.Input((size, size, 3))
    x = keras.layers.Flatten()(keras.layers.AveragePooling2D(4)(keras.layers.Rescaling(1 / 255)(inputs)))
    dim = (size // 4) ** 2 * 3
    centre = keras.layers.Dense(dim, use_bias=False, trainable=False)
    x = centre(x)
    centre.set_weights([np.eye(dim, dtype="float32") - 1.0 / dim])
    return keras.Model(inputs, keras.layers.UnitNormalization()(x), name="pixel_embedder")


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed: apt-get install -y chromium chromium-driver "
                                             "(Debian/Ubuntu; .ci/run installs it)")
@pytest.mark.slow
def test_the_page_enrolls_identifies_and_removes_as_the_library_decides(tmp_path, orl_dir):
    model = tmp_path / "pixels.keras"
    pixel_embedder().save(model)
    save_calibration(model, {"metric": "cosine", "threshold": THRESHOLD, "source": "a test value"})
    gallery = tmp_path / "g.db"
    with Gallery(gallery) as g:
        key = create_key(g, "admin", "admin")
    probes = {"s1": orl_dir / "s1" / "10.pgm", "s2": orl_dir / "s2" / "10.pgm", "stranger": orl_dir / "s31" / "10.pgm"}
    shown = {}
    server = Server(gallery, model)
    try:
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=[
                "--no-sandbox", "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"])
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("dialog", lambda dialog: dialog.accept())
            page.goto(server.url + "/")
            page.fill("#api-key", key)
            page.click("#key-form button")
            for person in ("s1", "s2"):
                page.fill("#enroll-name", person)
                page.set_input_files("#enroll-photos", [str(orl_dir / person / f"{i}.pgm") for i in (1, 2, 3)])
                page.click("#enroll-form button[type=submit]")
                page.wait_for_selector(f"#people-list tr[data-name='{person}']")
                assert page.inner_text("#enroll-result") == f"{person}: 3 photos enrolled, 0 already there"
            rows = page.inner_text("#people-list")
            assert "s1\t3" in rows and "s2\t3" in rows
            for who, photo in probes.items():
                page.evaluate("document.getElementById('identify-result').replaceChildren()")
                page.set_input_files("#identify-photo", str(photo))
                page.click("#identify-form button[type=submit]")
                shown[who] = page.wait_for_selector("#identify-result .verdict").inner_text()
                if who == "s1":
                    page.screenshot(path=os.environ.get("KERASCNN_SCREENSHOT", str(tmp_path / "page.png")),
                                    full_page=True)
            # the webcam: Chromium's fake camera (a test pattern, no face) -> the photo reaches the server
            page.fill("#enroll-name", "camera")
            page.click("#camera-start")
            page.wait_for_function("document.getElementById('camera').videoWidth > 0")
            page.click("#camera-capture")
            page.wait_for_function("document.getElementById('captured').textContent.startsWith('1 ')")
            page.click("#enroll-form button[type=submit]")
            camera = page.wait_for_selector("#enroll-result .error").inner_text()
            page.fill("#verify-name", "s2")
            page.set_input_files("#verify-photo", str(probes["s2"]))
            page.click("#verify-form button[type=submit]")
            verified = page.wait_for_selector("#verify-result .verdict").inner_text()
            page.click("#people-list tr[data-name='s2'] button")
            page.wait_for_selector("#people-list tr[data-name='s2']", state="detached")
            message = page.inner_text("#message")
            browser.close()
    finally:
        server.stop()
    with Faces(Gallery(gallery, read_only=True), model=str(model), detector="haar") as faces:
        assert faces.people() == ["s1"]
    with Faces(tmp_path / "library.db", model=str(model), detector="haar") as library:  # the same, in process
        for person in ("s1", "s2"):
            library.enroll(person, [orl_dir / person / f"{i}.pgm" for i in (1, 2, 3)])
        decided = {who: library.identify(photo).name or "not recognized" for who, photo in probes.items()}
    assert shown == decided == {"s1": "s1", "s2": "s2", "stranger": "not recognized"}
    assert verified == "match: s2" and message == "removed s2 (3 photos)"
    assert "(NoFaceError, HTTP 400)" in camera
