"""Every picture the project writes: image grids (plain and labelled) and the eigenvalue spectrum.

Plain grids (:func:`image_grid`) are numpy only (GIF frames, sample sheets). Labelled grids and
plots are drawn with matplotlib, imported inside the functions (``import regfac_jax.plots`` stays
light) and rendered on the Agg canvas of a :class:`matplotlib.figure.Figure`, so the process's
pyplot backend is never touched. Functions return uint8 RGB images ``[H, W, 3]``;
:func:`regfac_jax.io_utils.save_png` writes them atomically.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

__all__ = ["auto_scale", "format_steps", "image_grid", "labelled_grid", "spectrum"]

DPI = 100
FONT_SIZE = 9
OUTLINE_COLOR = "#ffd60a"


def _as_uint8(images, value_range: tuple[float, float] = (-1.0, 1.0)) -> np.ndarray:
    """uint8 images pass through; float images in ``value_range`` are mapped to 0..255 (clipped)."""
    from regfac_jax import io_utils

    images = np.asarray(images)
    return images if images.dtype == np.uint8 else io_utils.to_uint8(images, value_range)


def image_grid(
    images, scale: int = 1, pad: int = 1, value_range: tuple[float, float] = (-1.0, 1.0)
) -> np.ndarray:
    """Tiles ``[rows, cols, H, W, C]`` images into one picture.

    Args:
      images: uint8, or float in ``value_range``.
      scale: each tile is enlarged this many times (nearest neighbour).
      pad: white pixels between tiles and around the grid.
      value_range: range of float images.
    Returns:
      ``[rows * (H * scale + pad) + pad, cols * (W * scale + pad) + pad, C]`` uint8.
    """
    imgs = _as_uint8(images, value_range)
    if imgs.ndim != 5:
        raise ValueError(f"image_grid takes [rows, cols, H, W, C] images; got shape {imgs.shape}.")
    imgs = imgs.repeat(scale, axis=2).repeat(scale, axis=3)
    rows, cols, h, w, c = imgs.shape
    out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), 255, np.uint8)
    for r in range(rows):
        for col in range(cols):
            top, left = pad + r * (h + pad), pad + col * (w + pad)
            out[top : top + h, left : left + w] = imgs[r, col]
    return out


def auto_scale(resolution: int, target: int = 128) -> int:
    """Enlargement that brings small images (a 32 px demo model) to about ``target`` pixels; 1 for
    large ones."""
    return max(1, int(target) // max(int(resolution), 1))


def format_steps(steps: Sequence[float], digits: int = 3) -> list[str]:
    """Edit strengths as short labels: ``digits`` significant digits, and round-off next to zero
    shown as 0.

    ``linspace(-10, 10, 7)`` gives ``['-10', '-6.67', '-3.33', '0', '3.33', '6.67', '10']`` (its
    middle value is 2.4e-07 in float32, not 0).
    """
    values = np.asarray(steps, np.float64).reshape(-1)
    span = float(np.max(np.abs(values))) if values.size else 0.0
    tiny = 1e-5 * span  # float32 linspace leaves ~1e-7 relative round-off where it should give 0
    return ["0" if abs(v) <= tiny else f"{v:.{digits}g}" for v in values]


def _canvas(width_px: float, height_px: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI, facecolor="white")
    FigureCanvasAgg(fig)
    return fig


def _render(fig) -> np.ndarray:
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def _outline_tiles(ax, mask: np.ndarray, rows: int, cols: int, scale: int, pad: int) -> None:
    """Draws the region boundary (the 0.5 level of ``mask [H, W]``) on every tile of a grid shown by
    ``imshow``."""
    # closes the contour where the region touches the image border
    m = np.pad(np.asarray(mask, np.float32), 1)
    h, w = mask.shape
    centres_y = np.arange(-1, h + 1) * scale + scale / 2 - 0.5
    centres_x = np.arange(-1, w + 1) * scale + scale / 2 - 0.5
    for r in range(rows):
        for c in range(cols):
            oy, ox = pad + r * (h * scale + pad), pad + c * (w * scale + pad)
            ax.contour(
                centres_x + ox,
                centres_y + oy,
                m,
                levels=[0.5],
                colors=OUTLINE_COLOR,
                linewidths=1.0,
            )


def _tiled(imgs: np.ndarray, scale: int, pad: int) -> np.ndarray:
    """uint8 tiles [rows, cols, H, W, C] -> one image [H', W', 3], or [H', W'] for grey tiles."""
    grid = image_grid(imgs, scale=scale, pad=pad)
    return grid[..., 0] if grid.shape[-1] == 1 else grid


def _check_labels(
    rows: int, cols: int, row_labels: Sequence[str], col_labels: Sequence[str]
) -> None:
    """Refuses label lists whose lengths differ from the grid's rows and columns."""
    if len(row_labels) != rows or len(col_labels) != cols:
        raise ValueError(
            f"{rows}x{cols} images need {rows} row and {cols} column labels; got {len(row_labels)} "
            f"and {len(col_labels)}."
        )


def _label_tiles(
    ax, row_labels: Sequence[str], col_labels: Sequence[str], tile: tuple[int, int], pad: int
) -> None:
    """Puts each label as a tick at the centre of its row or column of tiles (tile: [h, w])."""
    tile_h, tile_w = tile
    ax.set_xticks(
        [pad + c * (tile_w + pad) + tile_w / 2 - 0.5 for c in range(len(col_labels))],
        list(col_labels),
    )
    ax.set_yticks(
        [pad + r * (tile_h + pad) + tile_h / 2 - 0.5 for r in range(len(row_labels))],
        list(row_labels),
    )


def labelled_grid(
    images,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    *,
    title: str | None = None,
    xlabel: str | None = None,
    ylabel: str | None = None,
    outline=None,
    scale: int | None = None,
    pad: int = 2,
    value_range: tuple[float, float] = (-1.0, 1.0),
) -> np.ndarray:
    """A grid of images with a label per row and per column, and optionally the region's outline on
    every tile.

    Args:
      images: ``[rows, cols, H, W, C]``, uint8 or float in ``value_range``.
      row_labels: ``rows`` strings (e.g. the method); col_labels: ``cols`` strings (e.g. the step).
      title, xlabel, ylabel: optional text above the grid, under the column labels, beside the row
        labels.
      outline: optional region mask ``[H, W]`` (values in [0, 1]) whose boundary is drawn on every
        tile.
      scale: enlargement of each tile (default :func:`auto_scale`); pad: white pixels between tiles.
    Returns:
      uint8 RGB ``[height, width, 3]``; the tiles keep their pixels (nearest-neighbour enlargement,
      no smoothing).
    """
    imgs = _as_uint8(images, value_range)
    rows, cols, h, w, _ = imgs.shape
    _check_labels(rows, cols, row_labels, col_labels)
    scale = auto_scale(h) if scale is None else int(scale)
    grid = _tiled(imgs, scale, pad)
    left = 16 + 7 * max(len(s) for s in row_labels) + (18 if ylabel else 0)
    fig, ax = _grid_axes(
        grid, left, top=22 + (22 if title else 0), bottom=8 + (22 if xlabel else 0)
    )
    _label_tiles(ax, row_labels, col_labels, (h * scale, w * scale), pad)
    _label(fig, ax, title, xlabel, ylabel)
    if outline is not None:
        _outline_tiles(ax, np.asarray(outline), rows, cols, scale, pad)
    ax.set_xlim(-0.5, grid.shape[1] - 0.5)
    ax.set_ylim(grid.shape[0] - 0.5, -0.5)
    return _render(fig)


def _grid_axes(grid: np.ndarray, left: int, top: int, bottom: int, right: int = 10):
    """A figure showing ``grid`` ``[H, W(, 3)]`` pixel for pixel inside margins (in pixels).

    Returns:
      ``(figure, axes)``.
    """
    fig = _canvas(left + grid.shape[1] + right, top + grid.shape[0] + bottom)
    fw, fh = fig.get_size_inches() * DPI
    ax = fig.add_axes((left / fw, bottom / fh, grid.shape[1] / fw, grid.shape[0] / fh))
    ax.imshow(
        grid, interpolation="nearest", cmap="gray" if grid.ndim == 2 else None, vmin=0, vmax=255
    )
    return fig, ax


def _label(fig, ax, title: str | None, xlabel: str | None, ylabel: str | None) -> None:
    """Tick labels on top without ticks or frame, and the optional axis labels and title."""
    ax.xaxis.tick_top()
    ax.tick_params(length=0, labelsize=FONT_SIZE)
    for side in ax.spines.values():
        side.set_visible(False)
    if xlabel:
        ax.set_xlabel(xlabel, fontsize=FONT_SIZE)
    if ylabel:
        ax.set_ylabel(ylabel, fontsize=FONT_SIZE)
    if title:
        fh = fig.get_size_inches()[1] * DPI
        fig.suptitle(title, fontsize=FONT_SIZE + 1, y=1 - 4 / fh, va="top")


def spectrum(
    spectra: Mapping[str, np.ndarray], title: str = "Eigenvalue spectra", size=(640, 420)
) -> np.ndarray:
    """A log-scale line plot of each region's generalized eigenvalues (descending), with a legend.

    Args:
      spectra: ``{region: eigenvalues [k]}``; values <= 0 (round-off) are drawn at 1e-12 of the
        largest.
      title: the plot's title; size: ``(width, height)`` in pixels.
    Returns:
      uint8 RGB ``[height, width, 3]``.
    """
    from matplotlib.ticker import MaxNLocator

    fig = _canvas(*size)
    ax = fig.add_subplot(1, 1, 1)
    top = max(float(np.max(v)) for v in spectra.values()) if spectra else 1.0
    floor = 1e-12 * top if top > 0 else 1e-12
    for name, values in spectra.items():
        v = np.maximum(np.asarray(values, np.float64).reshape(-1), floor)
        ax.semilogy(
            np.arange(1, v.size + 1), v, marker="o", markersize=3, linewidth=1.5, label=name
        )
    ax.set_xlabel("eigenvalue index (largest first)")
    ax.set_ylabel("λ = region change / background change")
    ax.set_title(title)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, which="major", alpha=0.3)
    if spectra:
        ax.legend()
    fig.tight_layout()
    return _render(fig)
