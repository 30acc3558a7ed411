"""The interactive editor (experiments.app): its plain functions, its server through gradio_client,
and the page in a real headless Chromium (Debian's ``chromium`` + ``chromium-driver``, driven by
selenium; nothing is downloaded).

One server (the shipped demo model) is started per module and shared by the server and browser
tests.
"""

from __future__ import annotations

import io
import os
import pathlib
import shutil
import socket
import sys
import time
import types
import urllib.request

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from experiments import pipeline
from experiments.app import core
from experiments.configs import demo_faces
from regfac_jax import directions, io_utils, jacobian, metrics, regions

SEED = 3
NUM = 4  # discovery samples in these tests (the benchmark measures the README's 16)
K = 3
RES = 32
SCALE = core.DISPLAY_SIZE // RES
# The demo faces' mouth box, in model pixels (half-open): rows 22..27, columns 10..21.
MOUTH = tuple(regions.box_bounds(regions.preset_box("faces", "mouth"), RES))
MOUTH_BOX = (MOUTH[0], MOUTH[2], MOUTH[1], MOUTH[3])  # row0, col0, row1, col1
STEP = 3.0  # the first slider at its end (the demo config's manipulation range is +-3)


@pytest.fixture(scope="module")
def model():
    return core.load_model(demo_faces.get_config())


@pytest.fixture(scope="module")
def mouth_session(model):
    session = core.new_session(model, SEED)
    core.set_box(session, *MOUTH_BOX)
    return core.compute(session, "resefa", NUM, K)


def library_directions(model, mask):
    """ReSeFa directions straight from the library for the app's discovery samples
    (sample_latents(seed, NUM))."""
    cfg = model.cfg.copy_and_resolve_references()
    with cfg.unlocked():
        cfg.seed, cfg.num_samples = SEED, NUM
    lat = pipeline.sample_latents(model.gen, cfg)
    fn = model.gen.latent_fn("w")
    A, B = jacobian.region_grams(fn, lat["ws"][:, 0], mask)
    return (
        fn,
        jnp.asarray(lat["ws"][0, 0]),
        np.asarray(directions.generalized_eigh(A[0], B[0], k=K)[1]),
    )


def share(before, after, mask) -> float:
    e_in, e_out = metrics.energies(
        jnp.asarray(after, jnp.float32) - jnp.asarray(before, jnp.float32), mask
    )
    return float(e_in / (e_in + e_out))


# --------------------------------------------------------------------------------------------------
# Plain functions (no gradio)
# --------------------------------------------------------------------------------------------------
def test_directions_are_the_library_s(model, mouth_session):
    _, _, lib = library_directions(model, mouth_session.mask)
    assert mouth_session.dirs.shape == (K, model.gen.w_dim)
    # The app averages per-sample float32 Grams in float64, the library in float32: the solves see
    # Grams that differ by float32 round-off (~1e-7 relative); the top directions are well separated
    # (eigenvalue gaps > 10%), so they agree to ~1e-5 and |cos| within 1e-4 leaves margin on any
    # CPU.
    cos = np.abs(np.sum(mouth_session.dirs * lib, axis=1))
    np.testing.assert_array_less(1 - cos, 1e-4)
    np.testing.assert_allclose(np.linalg.norm(mouth_session.dirs, axis=1), 1.0, rtol=1e-5)
    assert np.all(np.diff(mouth_session.spectrum) <= 0) and mouth_session.spectrum.shape == (
        model.gen.w_dim,
    )
    assert mouth_session.shares[0] > 0.5


def test_every_method_gives_unit_directions(model, mouth_session):
    # LowRankGAN goes through the same dispatch as Jacobian eig. (baselines.region_directions); its
    # robust PCA (seconds, and minutes with multi-threaded BLAS on busy cores) is tested in
    # test_baselines.py.
    for method in ("resefa", "jacobian_eig", "sefa", "ganspace"):
        # Grams are cached: only the solve runs
        session = core.compute(mouth_session, method, NUM, K)
        assert 1 <= session.dirs.shape[0] <= K and session.dirs.shape[1] == model.gen.w_dim, method
        np.testing.assert_allclose(
            np.linalg.norm(session.dirs, axis=1), 1.0, rtol=1e-5, err_msg=method
        )
        assert np.all(np.isfinite(session.spectrum)) and np.all(
            (session.shares >= 0) & (session.shares <= 1)
        )
    core.compute(mouth_session, "resefa", NUM, K)


def test_exports_npy_and_gif(mouth_session, tmp_path):
    path = core.export_npy(mouth_session, tmp_path)
    arr = np.load(path, allow_pickle=False)
    np.testing.assert_array_equal(arr, mouth_session.dirs)  # the paper's layout: rows [k, d]
    gif = core.export_gif(mouth_session, [STEP], tmp_path, frames=5)
    with Image.open(gif) as img:
        # ping-pong loop
        assert img.n_frames == 2 * 5 - 2 and img.size == (core.DISPLAY_SIZE, core.DISPLAY_SIZE)


def test_directions_carry_over_to_another_sample(model, mouth_session):
    session = core.compute(
        core.set_box(core.new_session(model, SEED), *MOUTH_BOX), "resefa", NUM, K
    )
    dirs = session.dirs.copy()
    core.select_seed(session, SEED + 1)
    np.testing.assert_array_equal(session.dirs, dirs)
    assert share(core.edited(session)[0], core.edited(session, [STEP])[0], session.mask) > 0.5


def test_methods_that_do_not_apply_are_refused_up_front(model):
    for kind, method, message in (
        ("biggan", "ganspace", "W of a StyleGAN"),
        ("stylegan3", "sefa", "StyleGAN2's"),
        ("stylegan2", "pca", "Unknown method"),
    ):
        fake = core.Model(cfg=model.cfg, gen=types.SimpleNamespace(kind=kind), layers=None)
        with pytest.raises(core.AppError, match=message):
            core.check_method(fake, method)


def test_regions_box_click_brush_and_bad_ones(model):
    session = core.new_session(model, 0)
    core.click(session, MOUTH_BOX[1] * SCALE + 1, MOUTH_BOX[0] * SCALE + 1)  # first corner (x, y)
    assert session.mask is None and session.corner == (MOUTH_BOX[0], MOUTH_BOX[1])
    # opposite corner
    core.click(session, (MOUTH_BOX[3] - 1) * SCALE + 6, (MOUTH_BOX[2] - 1) * SCALE + 6)
    np.testing.assert_array_equal(session.mask, regions.preset_mask("faces", "mouth", RES))
    paint = np.zeros((core.DISPLAY_SIZE, core.DISPLAY_SIZE, 4), np.uint8)
    paint[8 * SCALE : 12 * SCALE, 4 * SCALE : 20 * SCALE, 3] = 255
    core.set_brush(session, [paint])
    expected = np.zeros((RES, RES), np.float32)
    expected[8:12, 4:20] = 1
    np.testing.assert_array_equal(session.mask, expected)
    with pytest.raises(core.AppError, match="brush region is empty"):
        core.set_brush(session, [np.zeros_like(paint)])
    thin = np.zeros_like(paint)
    thin[100, :, 3] = 255  # one display row: an eighth of a model pixel's height
    with pytest.raises(core.AppError, match="wider stroke"):
        core.set_brush(session, [thin])
    with pytest.raises(core.AppError, match="non-positive height"):
        core.set_box(session, 5, 5, 5, 9)
    with pytest.raises(core.AppError, match="covers the whole image"):
        core.set_box(session, 0, 0, RES, RES)
    with pytest.raises(core.AppError, match="four numbers"):
        core.parse_box("1, 2, 3")
    with pytest.raises(core.AppError, match="No region yet"):
        core.compute(core.new_session(model, 1), "resefa", NUM, K)


def test_bad_uploads_are_refused_before_inversion(tmp_path):
    big = tmp_path / "huge.png"
    Image.new("1", (8000, 6000)).save(big)  # 48 M pixels in a few kB: refused before it is decoded
    with pytest.raises(core.AppError, match="pixels"):
        core.read_image(big, RES, 3)
    heavy = tmp_path / "heavy.png"
    heavy.write_bytes(b"\0" * (core.MAX_UPLOAD_BYTES + 1))
    with pytest.raises(core.AppError, match="MB"):
        core.read_image(heavy, RES, 3)
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(core.AppError, match="not an image"):
        core.read_image(text, RES, 3)


def test_failing_checkpoint_keeps_the_app_up(tmp_path):
    from experiments.app import ui

    bad = tmp_path / "broken.pkl"
    bad.write_bytes(b"\x80\x04garbage")
    cfg = core.with_model(demo_faces.get_config(), str(bad))
    app = ui.EditorApp.from_config(cfg)
    assert (
        app.load_error
        and "Could not load the model" in app.load_error
        and "broken.pkl" in app.load_error
    )
    ui.build(app)  # the page still builds and shows the message
    with pytest.raises(core.AppError, match="Could not load"):
        app.session(None)


# --------------------------------------------------------------------------------------------------
# The server, through gradio_client
# --------------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(model):
    from experiments.app import ui

    core.warm_up(model)  # compile once, as the launcher does, so the page answers at once
    app = ui.EditorApp(model.cfg, model)
    page = ui.build(app)
    _, url, _ = ui.launch(page, port=_free_port(), block=False)
    yield url
    page.close()


@pytest.fixture(scope="module")
def client(server):
    from gradio_client import Client

    return Client(server, verbose=False)


def _read_model_pixels(path) -> np.ndarray:
    """A displayed image -> ``[RES, RES, 3]`` in [-1, 1], read at the centre of each enlarged
    pixel."""
    with Image.open(path) as img:
        big = np.asarray(img.convert("RGB"), np.float32)
    return big[SCALE // 2 :: SCALE, SCALE // 2 :: SCALE] / 127.5 - 1.0


def _edit(client, *alphas, outline=False):
    values = list(alphas) + [0.0] * (core.K_MAX - len(alphas))
    return client.predict(outline, *values, api_name="/edit")[0]


def test_server_edit_stays_in_the_box_like_the_library(client, model):
    status = client.predict(SEED, api_name="/show_sample")[0]
    assert "seed 3" in status
    assert "Region: box" in client.predict(", ".join(map(str, MOUTH_BOX)), api_name="/set_box")[0]
    out = client.predict("resefa", NUM, K, api_name="/compute")
    assert "3 directions" in out[0], out[0]
    before, after = _read_model_pixels(_edit(client)), _read_model_pixels(_edit(client, STEP))
    mask = regions.preset_mask("faces", "mouth", RES)
    app_share = share(before, after, mask)
    fn, point, lib = library_directions(model, mask)
    imgs = np.asarray(metrics.render(fn, jnp.stack([point, point + STEP * jnp.asarray(lib[0])])))
    quantised = io_utils.to_uint8(imgs).astype(np.float32) / 127.5 - 1.0
    # mostly inside the box (the README's demo: 0.945 on held-out samples)
    assert app_share > 0.8, app_share
    # Same images up to rounding: the app's and the library's directions differ by float32 round-off
    # (see above), which can flip a few uint8 roundings; 2e-3 is far below any real difference in
    # where the edit lands.
    assert abs(app_share - share(quantised[0], quantised[1], mask)) < 2e-3
    # Against the library's float images: 8-bit quantisation (steps of 2/255) moves the share by
    # ~1e-3 here.
    assert abs(app_share - share(imgs[0], imgs[1], mask)) < 1e-2
    npy = client.predict(api_name="/export_npy")[0]
    # as above
    np.testing.assert_allclose(np.abs(np.sum(np.load(npy) * lib, axis=1)), 1.0, atol=1e-4)


def test_server_reports_bad_input_and_stays_up(client, tmp_path):
    assert "non-positive height" in client.predict("4, 4, 4, 10", api_name="/set_box")[0]
    assert "covers the whole image" in client.predict(f"0, 0, {RES}, {RES}", api_name="/set_box")[0]
    assert "outside" in client.predict("20, 20, 40, 40", api_name="/set_box")[0]
    assert "four numbers" in client.predict("eyes", api_name="/set_box")[0]
    from gradio_client import handle_file

    text = tmp_path / "notes.png"
    text.write_text("not an image")
    assert "not an image" in client.predict(handle_file(str(text)), 10, api_name="/upload")[0]
    assert "not found" in client.predict(str(tmp_path / "missing.pkl"), api_name="/load_model")[0]
    assert "seed 5" in client.predict(5, api_name="/show_sample")[0]  # still serving


def _fake_inversion(model, calls) -> types.ModuleType:
    """A stand-in for regfac_jax.inversion with its contract: invert(gen, images, config, *, space,
    seed, progress) -> result with .ws [N, num_ws, w_dim], config an InversionConfig; it records
    what it was given."""
    from regfac_jax.inversion import InversionConfig

    def invert(gen, images, config, *, space="w", seed=0, progress=None):
        calls.append(
            {
                "shape": images.shape,
                "min": float(images.min()),
                "max": float(images.max()),
                "space": space,
                "num_steps": config.num_steps,
            }
        )
        if progress is not None:
            progress(config.num_steps, 0.25)  # (steps done, mean loss), as the real one reports
        return types.SimpleNamespace(ws=np.asarray(core.sample_latents(model, 11, 1)["ws"]))

    module = types.ModuleType(core.INVERSION_MODULE)
    module.invert = invert
    module.InversionConfig = InversionConfig
    return module


def test_upload_goes_through_inversion(client, model, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setitem(sys.modules, core.INVERSION_MODULE, _fake_inversion(model, calls))
    photo = tmp_path / "photo.jpg"
    Image.fromarray(np.full((90, 60, 3), 200, np.uint8)).save(photo)
    from gradio_client import handle_file

    out = client.predict(handle_file(str(photo)), 7, api_name="/upload")
    assert "inverted upload" in out[0], out[0]
    # A flat grey photo stays flat through crop and resize; 1e-6 is float32 round-off of 200 / 127.5
    # - 1.
    assert calls == [
        {
            "shape": (1, RES, RES, 3),
            "min": pytest.approx(200 / 127.5 - 1, abs=1e-6),
            "max": pytest.approx(200 / 127.5 - 1, abs=1e-6),
            "space": "w",
            "num_steps": 7,
        }
    ]
    expected = io_utils.to_uint8(
        np.asarray(model.gen.synthesis(core.sample_latents(model, 11, 1)["ws"]))[0]
    )
    # The page renders through the latent function (vmap), the reference through synthesis: separate
    # XLA programs whose float32 round-off may flip a uint8 rounding, hence one quantisation step
    # (2/255).
    np.testing.assert_allclose(
        _read_model_pixels(out[1]), expected.astype(np.float32) / 127.5 - 1.0, atol=2 / 255 + 1e-6
    )
    # the module absent from this build
    monkeypatch.setitem(sys.modules, core.INVERSION_MODULE, None)
    assert (
        "Inversion is not available in this build"
        in client.predict(handle_file(str(photo)), 7, api_name="/upload")[0]
    )


# --------------------------------------------------------------------------------------------------
# The page in a real browser
# --------------------------------------------------------------------------------------------------
def _chrome():
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not browser or not driver:  # a failure, not a skip: CI (.ci/run) installs both
        pytest.fail(
            "headless Chromium not found: apt-get install chromium chromium-driver "
            "(.ci/run does this)"
        )
    os.environ.setdefault("SE_OFFLINE", "true")  # selenium must never try to download a driver
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1500,1100",
        "--force-device-scale-factor=1",
    ):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(executable_path=driver), options=opts)


def _offset_from_centre(driver, img, x: float, y: float) -> tuple[int, int]:
    """Offset from the element's centre of natural-image pixel (x, y), as the browser lays the
    picture out (object-fit 'contain' or 'scale-down', centred in the element's box)."""
    w, h, nw, nh, fit = driver.execute_script(
        "const e = arguments[0]; return [e.clientWidth, e.clientHeight, e.naturalWidth, "
        "e.naturalHeight, "
        "getComputedStyle(e).objectFit];",
        img,
    )
    scale = min(w / nw, h / nh)
    scale = (
        min(scale, 1.0) if fit == "scale-down" else scale if fit in ("contain", "cover") else 1.0
    )
    if fit == "fill":
        return int(x * w / nw - w / 2), int(y * h / nh - h / 2)
    return int(round((x - nw / 2) * scale)), int(round((y - nh / 2) * scale))


def _fetch_image(src: str) -> np.ndarray:
    with urllib.request.urlopen(src, timeout=10) as resp:
        return np.asarray(Image.open(io.BytesIO(resp.read())).convert("RGB"))


def test_browser_draw_box_and_slide(server, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    driver = _chrome()
    try:
        wait = WebDriverWait(driver, 60)
        driver.get(server)
        img = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#view img"))
        src0 = wait.until(
            lambda d: d.find_element(By.CSS_SELECTOR, "#view img").get_attribute("src")
        )
        img = driver.find_element(By.CSS_SELECTOR, "#view img")
        for r, c in ((MOUTH_BOX[0], MOUTH_BOX[1]), (MOUTH_BOX[2] - 1, MOUTH_BOX[3] - 1)):
            dx, dy = _offset_from_centre(driver, img, (c + 0.5) * SCALE, (r + 0.5) * SCALE)
            ActionChains(driver).move_to_element_with_offset(img, dx, dy).click().perform()
            time.sleep(0.5)
        box = ", ".join(map(str, MOUTH_BOX))
        wait.until(
            lambda d: (
                d.find_element(By.CSS_SELECTOR, "#box textarea, #box input").get_attribute("value")
                == box
            )
        )
        driver.find_element(By.CSS_SELECTOR, "#compute").click()
        wait.until(lambda d: "Move the sliders" in d.find_element(By.CSS_SELECTOR, "#status").text)
        src1 = driver.find_element(By.CSS_SELECTOR, "#view img").get_attribute("src")
        slider = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#slider0 input[type=range]"))
        slider.send_keys(Keys.END)
        src2 = wait.until(
            lambda d: (
                (s := d.find_element(By.CSS_SELECTOR, "#view img").get_attribute("src")) != src1
                and s
            )
        )
        before, after = _fetch_image(src1), _fetch_image(src2)
        assert before.shape == after.shape == (core.DISPLAY_SIZE, core.DISPLAY_SIZE, 3) and src0
        changed = np.abs(after.astype(int) - before.astype(int)).sum(-1) > 0
        assert changed.mean() > 0.01, "moving the slider did not change the image"
        shot = pathlib.Path(os.environ.get("REGFAC_APP_SCREENSHOT", tmp_path / "editor.png"))
        shot.parent.mkdir(parents=True, exist_ok=True)
        time.sleep(1.0)  # let the spectrum chart finish drawing
        assert driver.save_screenshot(str(shot))
        # The brush: paint a stroke in the Brush tab and use it as the region.
        next(
            b
            for b in driver.find_elements(By.CSS_SELECTOR, "button[role=tab]")
            if b.text.strip() == "Brush"
        ).click()
        canvas = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#brush canvas"))
        ActionChains(driver).move_to_element_with_offset(
            canvas, -40, 0
        ).click_and_hold().move_by_offset(40, 0).move_by_offset(40, 0).release().perform()
        next(
            b for b in driver.find_elements(By.TAG_NAME, "button") if "painted region" in b.text
        ).click()
        wait.until(lambda d: "Region: brush (" in d.find_element(By.CSS_SELECTOR, "#status").text)
    finally:
        driver.quit()
