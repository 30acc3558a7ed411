"""The editor's logic without any user interface: sessions, regions, directions, edits and exports.

Every function here is plain Python on numpy arrays, so tests and benchmarks call them without
gradio; the browser interface (:mod:`experiments.app.ui`) only wires them to widgets. The maths
comes from the library: Grams from :func:`regfac_jax.jacobian.region_grams`, ReSeFa from
:func:`regfac_jax.directions.generalized_eigh`, the baselines from :mod:`regfac_jax.baselines`,
edits from :mod:`regfac_jax.edit`, images from :func:`regfac_jax.metrics.render`, in-region shares
from :mod:`regfac_jax.metrics`, masks from :mod:`regfac_jax.regions`. Models, latents and per-sample
generator functions come from :mod:`experiments.pipeline`, exactly as the launchers get them, so the
editor works on every model they load.

A session holds one *subject* (the image being edited: a seeded sample or an inverted upload) as a
pure function ``fn(latent [d]) -> image [H, W, C]`` and its point ``[d]`` in the configured latent
space; the discovery samples are the subject and ``N - 1`` further samples drawn from the session's
seed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.util
import os
import pathlib
import tempfile
from typing import Callable

import jax.numpy as jnp
import numpy as np

from experiments import pipeline
from regfac_jax import (
    baselines,
    io_utils,
    jacobian,
    metrics,
    regions,
)
from regfac_jax import (
    directions as dirs_lib,
)
from regfac_jax import (
    edit as edit_lib,
)

#: Sliders the interface offers (the top-k directions shown at once).
K_MAX = 10
#: Images smaller than this are enlarged (nearest neighbour, integer factor) so a person can draw on
#: them.
DISPLAY_SIZE = 256
#: Upload limits: bytes on disk and decoded pixels (a decompression bomb is refused before
#: decoding).
MAX_UPLOAD_BYTES = 20 * 2**20
MAX_UPLOAD_PIXELS = 40_000_000
#: Samples whose w give GANSpace's principal axes.
GANSPACE_SAMPLES = 4096
#: Frames of an exported GIF's sweep from -1 to +1 times the slider values (played back and forth).
GIF_FRAMES = 9
#: Directions whose spectrum is shown (all d for small latents).
SPECTRUM_MAX = 64
OUTLINE_COLOR = (255, 215, 0)
METHOD_LABELS = {
    "resefa": "ReSeFa",
    "lowrankgan": "LowRankGAN",
    "jacobian_eig": "Jacobian eig. (foreground only)",
    "sefa": "SeFa",
    "ganspace": "GANSpace",
}
INVERSION_MODULE = "regfac_jax.inversion"
Progress = Callable[[float, str], None]


class AppError(ValueError):
    """A problem the user can fix; the message says what is wrong and what to do."""


# --------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------
@dataclasses.dataclass(eq=False)
class Model:
    """A loaded generator with the experiment config it came from.

    Attributes:
      cfg: the ml_collections config (``model``, ``space``, ``layers``, ``truncation_psi``,
        ``dataset``, ...).
      gen: the generator object.
      layers: W-space layer subset (None: every layer).
      cache: per-model results worth keeping (GANSpace axes).
    """

    cfg: object
    gen: object
    layers: tuple[int, ...] | None
    cache: dict = dataclasses.field(default_factory=dict)

    @property
    def resolution(self) -> int:
        return int(self.gen.img_resolution)

    @property
    def scale(self) -> int:
        """Integer display enlargement."""
        return max(1, DISPLAY_SIZE // self.resolution)

    def describe(self) -> str:
        g = self.gen
        return (
            f"`{self.cfg.model}`: {g.kind}, {self.resolution}x{self.resolution}, latent space "
            f"`{self.cfg.space}` (d = {latent_width(self)})"
        )


def load_model(cfg) -> Model:
    """Loads ``cfg.model`` through :func:`experiments.pipeline.prepare_model` (every format the
    launchers read).

    Raises:
      AppError: the checkpoint is missing or cannot be read (the message carries the loader's
        reason).
    """
    try:
        gen = pipeline.prepare_model(cfg)
    except Exception as err:  # noqa: BLE001 -- any loader failure becomes one message; the server stays up
        hint = (
            ""
            if "give 'demo'" in str(err)
            else (
                " Give 'demo', 'fixture:<name>', a checkpoint file or a converted "
                "checkpoint directory."
            )
        )
        raise AppError(f"Could not load the model {cfg.model!r}: {err}{hint}") from err
    layers = None
    if gen.kind != "biggan":
        layers = pipeline.parse_layers(cfg.layers, gen.num_ws)
    return Model(cfg=cfg, gen=gen, layers=layers)


def with_model(cfg, spec: str):
    """A copy of ``cfg`` whose ``model`` is ``spec``."""
    out = cfg.copy_and_resolve_references()
    with out.unlocked():
        out.model = str(spec).strip()
    return out


def latent_width(model: Model) -> int:
    """Width d of the editing latent in the configured space."""
    gen, space = model.gen, model.cfg.space
    if gen.kind == "biggan":
        return gen.z_dim * (2 if space == "z+class" else 1)
    return gen.num_ws * gen.w_dim if space == "wplus" else gen.w_dim


def _cfg_with(cfg, **fields):
    out = cfg.copy_and_resolve_references()
    with out.unlocked():
        for k, v in fields.items():
            setattr(out, k, v)
    return out


def sample_latents(model: Model, seed: int, num: int) -> dict:
    """``num`` latents from ``seed``, drawn as the launchers draw them (sample 0 is the same for
    every ``num``)."""
    return pipeline.sample_latents(
        model.gen, _cfg_with(model.cfg, seed=int(seed), num_samples=int(num), latents_file="")
    )


# --------------------------------------------------------------------------------------------------
# Sessions
# --------------------------------------------------------------------------------------------------
@dataclasses.dataclass(eq=False)
class Session:
    """One user's state.

    Attributes:
      model: the loaded model.
      seed: seed of the subject (when seeded) and of the further discovery samples.
      subject: ``(fn, point [d])`` of the image being edited; ``source`` says where it came from.
      base: the subject's image ``[H, W, C]`` (float, the generator's range).
      mask: the region ``[H, W]`` (None until drawn); ``region`` describes it.
      corner: the first corner of a box being clicked, in model pixels.
      method, dirs ``[k, d]``, spectrum ``[m]`` (the quotient ``n^T A n / n^T B n`` of the method's
      first m directions; ReSeFa's eigenvalues), shares ``[k]`` (first-order in-region share of each
      direction).
      grams: ``(key, A [d, d], B [d, d])`` of the last region and samples.
    """

    model: Model
    seed: int = 0
    subject: tuple | None = None
    source: str = ""
    base: np.ndarray | None = None
    mask: np.ndarray | None = None
    region: str = ""
    corner: tuple[int, int] | None = None
    method: str = ""
    dirs: np.ndarray | None = None
    spectrum: np.ndarray | None = None
    shares: np.ndarray | None = None
    grams: tuple | None = None
    outdir: pathlib.Path | None = None


def new_session(model: Model, seed: int = 0) -> Session:
    """A session on ``model`` showing the sample of ``seed``."""
    return select_seed(Session(model=model), seed)


def _set_subject(session: Session, fn, point, source: str) -> Session:
    session.subject = (fn, jnp.asarray(point))
    session.base = np.asarray(metrics.render(fn, jnp.asarray(point)[None]))[0]
    session.source = source
    session.grams = None  # directions found so far stay: they edit any sample of the model
    return session


def select_seed(session: Session, seed) -> Session:
    """Makes the sample of ``seed`` the subject.

    Raises:
      AppError: the seed is not an integer in [0, 2**32).
    """
    try:
        seed = int(seed)
    except (TypeError, ValueError):
        raise AppError(f"The seed must be a whole number; got {seed!r}.") from None
    if not 0 <= seed < 2**32:
        raise AppError(f"The seed must lie in 0 .. 2**32 - 1; got {seed}.")
    model = session.model
    lat = sample_latents(model, seed, 1)
    fn, point = pipeline.sample_function(model.gen, model.cfg, lat, 0, model.layers)
    session.seed = seed
    return _set_subject(session, fn, point, f"seed {seed}")


# --------------------------------------------------------------------------------------------------
# Regions
# --------------------------------------------------------------------------------------------------
def _set_mask(session: Session, mask: np.ndarray, description: str) -> Session:
    res = session.model.resolution
    try:
        mask = regions.validate_masks(mask, (res, res))[0]
    except regions.RegionError as err:
        raise AppError(
            f"{description}: {str(err).replace('Region 0', 'The region')} Draw another region."
        ) from err
    session.mask, session.region = mask, description
    session.corner = None
    session.dirs = session.spectrum = session.shares = None
    return session


def parse_box(text: str) -> tuple[int, int, int, int]:
    """``'row0, col0, row1, col1'`` (model pixels, half-open) -> four ints.

    Raises:
      AppError: not four whole numbers.
    """
    parts = [p for p in str(text).replace(";", ",").replace(" ", ",").split(",") if p]
    try:
        values = tuple(int(round(float(p))) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 4:
        raise AppError(
            "A box is four numbers 'row0, col0, row1, col1' (model pixels, end "
            f"excluded); got {text!r}."
        )
    return values


def set_box(session: Session, row0: int, col0: int, row1: int, col1: int) -> Session:
    """Region = the box of rows ``row0 .. row1 - 1`` and columns ``col0 .. col1 - 1`` (model
    pixels).

    Raises:
      AppError: an empty box, one outside the image, or one covering all of it.
    """
    res = session.model.resolution
    h, w = row1 - row0, col1 - col0
    label = f"box rows {row0}..{row1 - 1}, columns {col0}..{col1 - 1}"
    try:  # the paper's box convention on a grid of the model's own resolution
        mask = regions.box_mask((row0 + h // 2, col0 + w // 2, h, w), res, grid=res)
    except regions.RegionError as err:
        raise AppError(
            f"The box {row0}, {col0}, {row1}, {col1} cannot be used: {err} The image is "
            f"{res}x{res}; draw the box inside it."
        ) from err
    return _set_mask(session, mask, label)


def click(session: Session, x: int, y: int) -> Session:
    """A click at display pixel ``(x, y)``: the first click sets a box corner, the second the
    opposite corner."""
    s, res = session.model.scale, session.model.resolution
    r, c = min(max(int(y) // s, 0), res - 1), min(max(int(x) // s, 0), res - 1)
    if session.corner is None:
        session.corner = (r, c)
        return session
    (r0, c0), session.corner = session.corner, None
    return set_box(session, min(r0, r), min(c0, c), max(r0, r) + 1, max(c0, c) + 1)


def set_preset(session: Session, name: str) -> Session:
    """Region = a preset box of the config's dataset (``regions.PRESETS``)."""
    try:
        mask = regions.preset_mask(session.model.cfg.dataset, name, session.model.resolution)
    except regions.RegionError as err:
        raise AppError(str(err)) from err
    return _set_mask(session, mask, f"preset '{name}'")


def preset_names(model: Model) -> list[str]:
    try:
        return regions.preset_names(model.cfg.dataset)
    except regions.RegionError:
        return []


def set_brush(session: Session, layers) -> Session:
    """Region = the painted pixels of brush layers (display-size ``[Hd, Wd, 4]`` RGBA arrays, alpha
    = paint).

    Raises:
      AppError: nothing painted, or everything painted.
    """
    alphas = [
        np.asarray(layer)[..., 3]
        for layer in (layers or [])
        if layer is not None and np.ndim(layer) == 3 and np.shape(layer)[-1] == 4
    ]
    painted = (np.max(np.stack(alphas), axis=0) > 0).astype(np.float32) if alphas else None
    if painted is None or not painted.any():
        raise AppError("The brush region is empty: paint over the image in the Brush tab first.")
    # Coverage of each model pixel (area-weighted downsizing), then at least half covered = in the
    # region.
    mask = (regions.mask_from_array(painted, session.model.resolution, soft=True) >= 0.5).astype(
        np.float32
    )
    if not mask.any():
        raise AppError(
            f"The painted strokes cover no pixel of the {session.model.resolution}x"
            f"{session.model.resolution} image by half or more; paint a wider stroke."
        )
    return _set_mask(session, mask, f"brush ({int(mask.sum())} pixels)")


# --------------------------------------------------------------------------------------------------
# Directions
# --------------------------------------------------------------------------------------------------
def discovery_samples(session: Session, num: int) -> list[tuple]:
    """``(fn, point)`` of the subject and ``num - 1`` further samples of the session's seed."""
    model = session.model
    lat = sample_latents(model, session.seed, num)
    return [session.subject] + [
        pipeline.sample_function(model.gen, model.cfg, lat, i, model.layers) for i in range(1, num)
    ]


def grams(
    session: Session, num: int, progress: Progress | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The region's Grams ``(A, B)``, ``[d, d]`` each, averaged over ``num`` discovery samples
    (cached)."""
    key = (
        id(session.subject),
        session.seed,
        int(num),
        hashlib.sha1(session.mask.tobytes()).hexdigest(),
    )
    if session.grams is not None and session.grams[0] == key:
        return session.grams[1], session.grams[2]
    total_a = total_b = 0.0
    for i, (fn, point) in enumerate(discovery_samples(session, num)):
        if progress:
            progress(i / num, f"Jacobian of sample {i + 1}/{num}")
        a, b = jacobian.region_grams(fn, point, session.mask)
        total_a, total_b = (
            total_a + np.asarray(a[0], np.float64),
            total_b + np.asarray(b[0], np.float64),
        )
    A, B = total_a / num, total_b / num
    session.grams = (key, A, B)
    return A, B


def _ganspace_axes(model: Model, k: int) -> np.ndarray:
    if "ganspace" not in model.cache:
        lat = sample_latents(model, 0, GANSPACE_SAMPLES)
        model.cache["ganspace"] = baselines.ganspace(lat["ws"][:, 0], k=SPECTRUM_MAX)
    return model.cache["ganspace"][:k]


def check_method(model: Model, method: str) -> None:
    """Raises AppError when ``method`` does not apply to ``model`` (before any Jacobian is
    computed)."""
    if method not in METHOD_LABELS:
        raise AppError(f"Unknown method {method!r}; choose one of {', '.join(METHOD_LABELS)}.")
    if method in ("sefa", "ganspace") and (model.gen.kind == "biggan" or model.cfg.space != "w"):
        raise AppError(
            f"{METHOD_LABELS[method]} finds directions in W of a StyleGAN; this model edits "
            f"{model.gen.kind} in space '{model.cfg.space}'. Choose a region-aware method."
        )
    if method == "sefa" and model.gen.kind != "stylegan2":
        raise AppError(
            f"SeFa factorises StyleGAN2's style-affine weights; this model is {model.gen.kind}. "
            "Choose another method."
        )


def method_directions(session: Session, method: str, A, B, k: int) -> np.ndarray:
    """The method's top-``k`` directions ``[k', d]`` (``k' <= k``; LowRankGAN may find fewer)."""
    model = session.model
    check_method(model, method)
    if method == "resefa":
        return np.asarray(dirs_lib.generalized_eigh(A, B, k=k)[1], np.float32)
    if method == "ganspace":
        return _ganspace_axes(model, k)
    if method == "sefa":
        return baselines.sefa(model.gen.params, model.layers, k)
    return baselines.region_directions(method, A, B, k=k)


def compute(
    session: Session, method: str, num_samples: int, k: int, progress: Progress | None = None
) -> Session:
    """Directions of ``method`` for the session's region from ``num_samples`` discovery samples.

    Fills ``session.dirs`` ``[k', d]``, ``session.spectrum`` (for ReSeFa the generalized
    eigenvalues, for the others the quotient ``n^T A n / n^T B n`` of their directions) and
    ``session.shares`` ``[k']``.

    Raises:
      AppError: no region yet, bad counts, or a method that does not apply to this model.
    """
    if session.mask is None:
        raise AppError(
            "No region yet: click two corners of a box on the image, pick a preset, or paint one."
        )
    num_samples, k = int(num_samples), int(k)
    if not 1 <= num_samples <= 1024 or not 1 <= k <= K_MAX:
        raise AppError(
            f"Choose 1..1024 samples and 1..{K_MAX} directions; got {num_samples} and {k}."
        )
    check_method(session.model, method)
    A, B = grams(session, num_samples, progress)
    if progress:
        progress(1.0, f"solving ({METHOD_LABELS.get(method, method)})")
    try:
        dirs = method_directions(session, method, A, B, k)
    except FloatingPointError as err:
        raise AppError(
            f"{METHOD_LABELS[method]} found no direction for this region: {err}"
        ) from err
    if method == "resefa":  # the whole generalized spectrum (up to SPECTRUM_MAX values)
        spectrum = np.asarray(dirs_lib.generalized_eigh(A, B, k=SPECTRUM_MAX)[0], np.float64)
    else:  # the same quotient, for the directions the method offers
        spectrum = np.asarray(dirs_lib.rayleigh_quotient(A, B, dirs), np.float64)
    session.method, session.dirs, session.spectrum = method, dirs, spectrum
    session.shares = metrics.linear_share(A, B, session.mask, dirs, session.base.shape[-1])
    return session


# --------------------------------------------------------------------------------------------------
# Edits and pictures
# --------------------------------------------------------------------------------------------------
def slider_range(model: Model) -> float:
    """The largest edit step a slider offers (the config's manipulation range)."""
    m = model.cfg.manipulate
    return float(max(abs(m.step_start), abs(m.step_stop)))


def edit_vector(session: Session, alphas) -> np.ndarray:
    """``sum_i alpha_i n_i`` over the session's directions ``[d]`` (extra slider values are
    ignored)."""
    dirs = session.dirs
    if dirs is None:
        return np.zeros(np.shape(session.subject[1]), np.float32)
    a = np.zeros(dirs.shape[0], np.float32)
    given = np.asarray([float(v or 0.0) for v in list(alphas)[: dirs.shape[0]]], np.float32)
    a[: given.shape[0]] = given
    return a @ dirs


def edited(session: Session, alphas=(), scales=(1.0,)) -> np.ndarray:
    """The subject edited by ``s * sum_i alpha_i n_i`` for each ``s`` in ``scales`` ->
    ``[S, H, W, C]``."""
    fn, point = session.subject
    latents = edit_lib.edit_latent(
        point[None], edit_vector(session, alphas), jnp.asarray(scales, jnp.float32)
    )[0]
    return np.asarray(metrics.render(fn, latents))


def display(session: Session, image: np.ndarray, outline: bool = True) -> np.ndarray:
    """An image ``[H, W, C]`` as uint8 RGB enlarged for display, with the region's outline drawn on
    it."""
    s = session.model.scale
    u8 = io_utils.to_uint8(image)
    u8 = np.repeat(u8, 3, axis=-1) if u8.shape[-1] == 1 else u8[..., :3]
    big = u8.repeat(s, axis=0).repeat(s, axis=1)
    if outline and session.mask is not None:
        m = (session.mask > 0.5).repeat(s, axis=0).repeat(s, axis=1)
        pad = np.pad(m, 1, mode="constant")
        inner = pad[:-2, 1:-1] & pad[2:, 1:-1] & pad[1:-1, :-2] & pad[1:-1, 2:]
        border = m & ~inner
        # two pixels wide where the enlargement leaves room (still short of each pixel block's
        # centre)
        if s >= 4:
            pad = np.pad(border, 1, mode="constant")
            border = m & (pad[:-2, 1:-1] | pad[2:, 1:-1] | pad[1:-1, :-2] | pad[1:-1, 2:] | border)
        big = big.copy()
        big[border] = OUTLINE_COLOR
    return big


def render_view(session: Session, alphas=(), outline: bool = True) -> np.ndarray:
    """What the editor shows: the edited subject, enlarged, with the region outline (uint8
    ``[Hd, Wd, 3]``)."""
    return display(session, edited(session, alphas)[0], outline)


def spectrum_rows(session: Session) -> list[dict]:
    """The spectrum as rows ``{'direction': i (1-based), 'log10 value': ...}`` for a bar chart."""
    if session.spectrum is None:
        return []
    v = np.maximum(np.asarray(session.spectrum, np.float64), 1e-30)
    return [{"direction": i + 1, "log10 value": float(np.log10(x))} for i, x in enumerate(v)]


def slider_labels(session: Session) -> list[str]:
    return [f"#{i + 1}  (in-region share {share:.2f})" for i, share in enumerate(session.shares)]


# --------------------------------------------------------------------------------------------------
# Exports
# --------------------------------------------------------------------------------------------------
def _outdir(session: Session) -> pathlib.Path:
    if session.outdir is None:
        session.outdir = pathlib.Path(tempfile.mkdtemp(prefix="regfac_app_"))
    return session.outdir


def _name(session: Session) -> str:
    region = "".join(ch if ch.isalnum() else "_" for ch in session.region).strip("_")[:40]
    return f"{session.method}_{region}"


def export_npy(session: Session, directory=None) -> pathlib.Path:
    """Writes the directions in the paper's layout (``.npy``, rows ``[k, d]``, unit norm) and
    returns the path."""
    if session.dirs is None:
        raise AppError("Nothing to export yet: compute the directions first.")
    path = pathlib.Path(directory or _outdir(session)) / f"{_name(session)}.npy"
    io_utils.save_npy(path, np.asarray(session.dirs, np.float32))
    return path


def export_gif(session: Session, alphas, directory=None, frames: int = GIF_FRAMES) -> pathlib.Path:
    """A looping GIF of the current edit swept from ``-1`` to ``+1`` times the slider values (the
    first direction at the largest step when every slider is at 0)."""
    if session.dirs is None:
        raise AppError("Nothing to export yet: compute the directions first.")
    alphas = np.asarray([float(v or 0.0) for v in alphas], np.float32)
    if not np.any(alphas[: session.dirs.shape[0]]):
        alphas = np.zeros(session.dirs.shape[0], np.float32)
        alphas[0] = slider_range(session.model)
    scales = np.linspace(-1.0, 1.0, frames, dtype=np.float32)
    images = edited(session, alphas, scales)
    path = pathlib.Path(directory or _outdir(session)) / f"{_name(session)}.gif"
    io_utils.save_gif(path, [display(session, img, outline=False) for img in images])
    return path


# --------------------------------------------------------------------------------------------------
# Real images
# --------------------------------------------------------------------------------------------------
def inversion_available() -> bool:
    """Whether this build has :mod:`regfac_jax.inversion` (checked without importing it)."""
    try:
        return importlib.util.find_spec(INVERSION_MODULE) is not None
    except (ImportError, ValueError):
        return False


def _inversion():
    try:
        return importlib.import_module(INVERSION_MODULE)
    except ModuleNotFoundError as err:
        if err.name not in (INVERSION_MODULE, None):
            raise
        raise AppError(
            "Inversion is not available in this build (regfac_jax.inversion is "
            "missing), so real images cannot be edited yet; pick samples by seed instead."
        ) from err


def read_image(path, resolution: int, channels: int) -> np.ndarray:
    """An image file -> float ``[resolution, resolution, channels]`` in [-1, 1] (centre square crop,
    Lanczos resize).

    Raises:
      AppError: missing, too large (bytes or pixels), or not an image Pillow can read.
    """
    from PIL import Image, UnidentifiedImageError

    path = pathlib.Path(path)
    _check_upload_file(path)
    try:
        with Image.open(path) as img:
            arr = _centre_square(img, path.name, resolution, channels)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as err:
        raise AppError(
            f"{path.name} is not an image this editor can read (PNG, JPEG, WebP, ...): {err}"
        ) from err
    arr = arr[..., None] if arr.ndim == 2 else arr
    return arr / 127.5 - 1.0


def _check_upload_file(path: pathlib.Path) -> None:
    """Refuses an upload that did not arrive or has more than ``MAX_UPLOAD_BYTES``."""
    if not path.is_file():
        raise AppError(f"The upload {path.name!r} did not arrive; upload it again.")
    size = path.stat().st_size
    if size > MAX_UPLOAD_BYTES:
        raise AppError(
            f"{path.name} is {size / 2**20:.1f} MB; the editor takes images up to "
            f"{MAX_UPLOAD_BYTES // 2**20} MB. Downscale it first."
        )


def _centre_square(img, name: str, resolution: int, channels: int) -> np.ndarray:
    """An open Pillow image -> float pixels in [0, 255], centre-square-cropped and resized."""
    from PIL import Image

    w, h = img.size
    if w * h > MAX_UPLOAD_PIXELS:
        raise AppError(
            f"{name} is {w}x{h} pixels; the editor takes up to "
            f"{MAX_UPLOAD_PIXELS:,} pixels. Downscale it first."
        )
    side = min(w, h)
    box = ((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side)
    img = img.convert("L" if channels == 1 else "RGB").crop(box)
    img = img.resize((resolution, resolution), Image.Resampling.LANCZOS)
    return np.asarray(img, np.float32)


def upload(
    session: Session, path, num_steps: int = 200, progress: Progress | None = None
) -> Session:
    """Inverts an image file with :func:`regfac_jax.inversion.invert` and makes it the subject.

    Raises:
      AppError: a bad file, a model inversion does not support, or no inversion in this build.
    """
    model = session.model
    if model.gen.kind == "biggan":
        raise AppError(
            "Real images can be inverted into StyleGAN generators only; this model is BigGAN."
        )
    image = read_image(path, model.resolution, model.gen.img_channels)
    inversion = _inversion()
    space = "wplus" if model.cfg.space == "wplus" else "w"
    report = _progress_adapter(progress, int(num_steps))
    config = inversion.InversionConfig(num_steps=int(num_steps))
    result = inversion.invert(model.gen, image[None], config, space=space, seed=0, progress=report)
    ws = np.asarray(result.ws, np.float32)
    if ws.shape != (1, model.gen.num_ws, model.gen.w_dim):
        raise AppError(
            f"The inversion returned ws of shape {ws.shape}; expected [1, {model.gen.num_ws}, "
            f"{model.gen.w_dim}]."
        )
    fn, point = pipeline.sample_function(model.gen, model.cfg, {"ws": ws}, 0, model.layers)
    return _set_subject(session, fn, point, f"upload {pathlib.Path(path).name}")


def _progress_adapter(progress: Progress | None, num_steps: int):
    """``regfac_jax.inversion.invert``'s ``progress(step, loss)`` as the UI's fraction of
    ``num_steps`` done."""
    if progress is None:
        return None

    def report(step: int, loss: float) -> None:
        progress(min(1.0, step / max(num_steps, 1)), f"inverting (loss {loss:.4g})")

    return report


def warm_up(model: Model) -> None:
    """Compiles the Jacobian, solver and render paths once, so the first user action is fast."""
    session = new_session(model, 0)
    res = model.resolution
    set_box(session, res // 4, res // 4, res // 2, res // 2)
    compute(session, "resefa", 1, 1)
    render_view(session, [1.0])
    # the GIF's batch size
    edited(session, [1.0], np.linspace(-1.0, 1.0, GIF_FRAMES, dtype=np.float32))


def environment_note() -> str:
    """How busy the machine is (for benchmark reports)."""
    try:
        load = os.getloadavg()
    except OSError:
        return "load average unavailable"
    return f"load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} on {os.cpu_count()} CPUs"
