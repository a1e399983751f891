"""
Plotting utilities for VAE experiments: image grids, reconstructions,
latent interpolations, latent-space scatter plots and training curves.

Every ``save_*`` function renders with matplotlib's Agg canvas directly
(:class:`~matplotlib.figure.Figure` + :class:`~matplotlib.backends.backend_agg.FigureCanvasAgg`),
so pyplot is never imported and the user's selected backend is left alone.
Figures are not registered with pyplot, so nothing is left open: a figure is
released as soon as the function returns. PNGs are written atomically (to a
temporary file in the destination directory, then :func:`os.replace`), parent
directories are created as needed, and the path is returned as a string.

Images are torch tensors or numpy arrays of shape ``(N, C, H, W)`` with
``C`` in ``{1, 3}`` (channel-first) or ``(N, H, W)``, with values in
``[0, 1]``; values outside that range are clipped.
"""

import math
import os
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from .files import atomic_write

_DPI = 100
_SEPARATOR = 0.5  # neutral gray between tiles and in empty cells
_MIN_CELL_PIXELS = 32  # an image's shorter side is upscaled to at least this
_MAX_FIGURE_PIXELS = 2048  # ...unless the grid's longer side would exceed this
_PAIRS_PER_ROW = 16
_SCATTER_SIZE = 8.0
_JITTER = 0.3


def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _as_images(x, name, batch="N"):
    """
    Validates a stack of images and converts it to float64 channel-last
    ``(*batch, H, W)`` (grayscale) or ``(*batch, H, W, 3)`` (RGB) in [0, 1].

    :param x: a tensor or array of shape ``(*batch, C, H, W)`` or ``(*batch, H, W)``.
    :param str name: argument name used in error messages.
    :param str batch: comma separated names of the leading batch dimensions.
    """
    x = _to_numpy(x)
    num_batch = batch.count(",") + 1
    expected = "({0}, C, H, W) with C in {{1, 3}} or ({0}, H, W)".format(batch)
    if x.ndim not in (num_batch + 2, num_batch + 3):
        raise ValueError(f"{name} must have shape {expected}, got shape {x.shape}")
    if x.ndim == num_batch + 3:
        if x.shape[-3] not in (1, 3):
            raise ValueError(f"{name} must have shape {expected}, got shape {x.shape}")
        x = x[..., 0, :, :] if x.shape[-3] == 1 else np.moveaxis(x, -3, -1)
    if x.size == 0:
        raise ValueError(f"{name} must contain at least one non-empty image, got shape {x.shape}")
    return np.clip(x.astype(np.float64), 0.0, 1.0)


def _tile(images, nrow, padding):
    """
    Tiles channel-last images row-major into one array; empty cells and the
    ``padding``-pixel borders around every tile are filled with gray.
    """
    n, height, width = images.shape[:3]
    ncol = min(nrow, n)
    nrows = math.ceil(n / ncol)
    shape = (nrows * (height + padding) + padding, ncol * (width + padding) + padding)
    grid = np.full(shape + images.shape[3:], _SEPARATOR)
    for i, image in enumerate(images):
        top = padding + (i // ncol) * (height + padding)
        left = padding + (i % ncol) * (width + padding)
        grid[top : top + height, left : left + width] = image
    return grid


def _grid(images, nrow, padding):
    """
    Validates ``nrow`` and ``padding`` and tiles channel-last images.
    """
    if nrow is None:
        nrow = math.ceil(math.sqrt(len(images)))
    if nrow < 1:
        raise ValueError(f"nrow must be a positive integer, got {nrow}")
    if padding < 0:
        raise ValueError(f"padding must be non-negative, got {padding}")
    return _tile(images, nrow, padding)


def image_grid(images: Union[torch.Tensor, np.ndarray], nrow: Optional[int] = None, padding: int = 1) -> np.ndarray:
    r"""
    Tiles a batch of images into a single image, row-major. Tiles are
    separated (and surrounded) by ``padding`` pixels of 0.5 gray; unused cells
    of the last row are gray too. Values outside [0, 1] are clipped.

    The result has height ``rows * (H + padding) + padding`` and width
    ``cols * (W + padding) + padding`` where ``cols = min(nrow, N)`` and
    ``rows = ceil(N / cols)``.

    :param images: tensor or array of shape ``(N, C, H, W)`` with ``C`` in
        ``{1, 3}``, or ``(N, H, W)``, with values in [0, 1].
    :param int nrow: number of images per row; defaults to :math:`\lceil \sqrt{N} \rceil`.
    :param int padding: width in pixels of the separators between tiles.
    :returns: a float array of shape ``(H', W')`` for grayscale input or
        ``(H', W', 3)`` for RGB input, with values in [0, 1].
    :rtype: numpy.ndarray
    """
    return _grid(_as_images(images, "images"), nrow, padding)


def _save_figure(fig, path, **kwargs):
    """
    Writes ``fig`` as a PNG to ``path`` atomically and returns the path.
    """
    path = os.fspath(path)
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=_DPI, **kwargs)
    return path


def _new_figure(figsize):
    fig = Figure(figsize=figsize, dpi=_DPI)
    FigureCanvasAgg(fig)
    return fig


def _pixel_scale(grid_shape, cell_shape):
    """
    Integer upscaling factor so that a cell's shorter side spans at least
    ``_MIN_CELL_PIXELS`` screen pixels, limited by ``_MAX_FIGURE_PIXELS``.
    """
    scale = math.ceil(_MIN_CELL_PIXELS / min(cell_shape))
    return max(1, min(scale, _MAX_FIGURE_PIXELS // max(grid_shape)))


def _save_grid(grid, cell_shape, path, title=None, row_labels=None):
    """
    Saves a tiled image with nearest-neighbour upscaling by an integer factor.

    :param numpy.ndarray grid: output of :func:`_tile`.
    :param tuple cell_shape: ``(H, W)`` of one tile, used to pick the scale.
    :param path: destination PNG path.
    :param str title: optional title.
    :param dict row_labels: optional map from row centre (in grid pixels) to label.
    """
    height, width = grid.shape[:2]
    scale = _pixel_scale((height, width), cell_shape)
    fig = _new_figure((width * scale / _DPI, height * scale / _DPI))
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    color_args = {"cmap": "gray", "vmin": 0.0, "vmax": 1.0} if grid.ndim == 2 else {}
    ax.imshow(grid, interpolation="nearest", **color_args)
    ax.set_frame_on(False)
    ax.set_xticks([])
    row_labels = row_labels or {}
    ax.set_yticks(list(row_labels), list(row_labels.values()))
    ax.tick_params(left=False)
    if title is not None:
        ax.set_title(title)
    return _save_figure(fig, path, bbox_inches="tight", pad_inches=0.05)


def save_image_grid(
    images: Union[torch.Tensor, np.ndarray], path: str, nrow: Optional[int] = None, title: Optional[str] = None
) -> str:
    r"""
    Saves a grid of images as a PNG. Small images are upscaled with
    nearest-neighbour interpolation by an integer factor so each image spans
    at least about 32 screen pixels (e.g. 4x for 8x8 digits). Values outside
    [0, 1] are clipped.

    :param images: tensor or array of shape ``(N, C, H, W)`` with ``C`` in
        ``{1, 3}``, or ``(N, H, W)``, with values in [0, 1].
    :param path: destination PNG path; parent directories are created.
    :param int nrow: number of images per row; defaults to :math:`\lceil \sqrt{N} \rceil`.
    :param str title: optional figure title.
    :returns: the path written.
    :rtype: str
    """
    images = _as_images(images, "images")
    return _save_grid(_grid(images, nrow, padding=1), images.shape[1:3], path, title=title)


def save_reconstructions(
    inputs: Union[torch.Tensor, np.ndarray], reconstructions: Union[torch.Tensor, np.ndarray], path: str, title: Optional[str] = None,
    labels: Sequence[str] = ("input", "recon."),
) -> str:
    """
    Saves inputs and their reconstructions as a PNG. Rows alternate between
    inputs (labelled ``labels[0]``, "input") and reconstructions (labelled
    ``labels[1]``, "recon."), with up to 16 examples per row; an input and
    its reconstruction share a column. Values outside [0, 1] are clipped.

    :param inputs: tensor or array of shape ``(N, C, H, W)`` with ``C`` in
        ``{1, 3}``, or ``(N, H, W)``, with values in [0, 1].
    :param reconstructions: tensor or array of images matching ``inputs``.
    :param path: destination PNG path; parent directories are created.
    :param str title: optional figure title.
    :param labels: the row labels of the inputs and of the reconstructions.
    :returns: the path written.
    :rtype: str
    """
    x = _as_images(inputs, "inputs")
    x_hat = _as_images(reconstructions, "reconstructions")
    if x.shape != x_hat.shape:
        raise ValueError(
            "inputs and reconstructions must have the same shape, got inputs of shape "
            f"{_to_numpy(inputs).shape} and reconstructions of shape {_to_numpy(reconstructions).shape}"
        )
    ncol = min(len(x), _PAIRS_PER_ROW)
    cell_shape = x.shape[1:]
    blank = np.full(((-len(x)) % ncol,) + cell_shape, _SEPARATOR)
    pairs = np.stack([np.concatenate([x, blank]), np.concatenate([x_hat, blank])])
    # (2, rows * ncol, ...) -> (rows, 2, ncol, ...): input row, then its reconstruction row
    pairs = pairs.reshape((2, -1, ncol) + cell_shape).swapaxes(0, 1)
    grid = _tile(pairs.reshape((-1,) + cell_shape), ncol, padding=1)
    height = cell_shape[0]
    row_labels = {
        1 + row * (height + 1) + (height - 1) / 2: labels[row % 2]
        for row in range(2 * pairs.shape[0])
    }
    return _save_grid(grid, cell_shape[:2], path, title=title, row_labels=row_labels)


def save_interpolation(strips: Union[torch.Tensor, np.ndarray], path: str, title: Optional[str] = None) -> str:
    """
    Saves latent interpolations as a PNG: one row per interpolation, one
    column per step, with the endpoints in the first and last columns.
    Values outside [0, 1] are clipped.

    :param strips: tensor or array of shape ``(R, S, C, H, W)`` with ``C`` in
        ``{1, 3}``, or ``(R, S, H, W)``: ``R`` interpolations of ``S`` steps.
    :param path: destination PNG path; parent directories are created.
    :param str title: optional figure title.
    :returns: the path written.
    :rtype: str
    """
    strips = _as_images(strips, "strips", batch="R, S")
    num_steps = strips.shape[1]
    cell_shape = strips.shape[2:]
    grid = _tile(strips.reshape((-1,) + cell_shape), num_steps, padding=1)
    return _save_grid(grid, cell_shape[:2], path, title=title)


def _pca_2d(z):
    """
    Projects centred codes onto their first two principal components.

    Each component's sign is fixed so that its largest-magnitude loading is
    positive.

    :param numpy.ndarray z: array of shape ``(N, D)`` with ``N >= 2`` and ``D >= 2``.
    :returns: a tuple ``(projection, explained)`` of the ``(N, 2)`` projection
        and the fraction of total variance explained by each component.
    :rtype: tuple
    """
    centred = z - z.mean(axis=0)
    _, singular_values, vt = np.linalg.svd(centred, full_matrices=False)
    components = vt[:2]
    rows = np.arange(len(components))
    components = components * np.sign(components[rows, np.abs(components).argmax(axis=1)])[:, None]
    variance = singular_values**2
    total = variance.sum()
    explained = variance[:2] / total if total > 0 else np.zeros(2)
    return centred @ components.T, explained


def _latent_labels(labels, num_codes):
    """
    Validates labels and returns ``(classes, index)`` where ``classes`` are
    the sorted distinct labels and ``index[i]`` is the class position of code ``i``.
    """
    if labels is None:
        return np.zeros(1, dtype=np.int64), np.zeros(num_codes, dtype=np.int64)
    labels = _to_numpy(labels)
    if labels.shape != (num_codes,):
        raise ValueError(f"labels must have shape ({num_codes},) to match z, got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
    return np.unique(labels, return_inverse=True)


def _latent_coordinates(z, index):
    """
    Returns ``(xy, xlabel, ylabel)`` for plotting codes ``z`` of shape ``(N, D)``:
    a jittered strip per class for ``D == 1``, the codes themselves for
    ``D == 2``, and the first two principal components for ``D > 2``.
    """
    dim = z.shape[1]
    if dim == 1:
        jitter = np.random.default_rng(0).uniform(-_JITTER, _JITTER, len(z))
        return np.stack([z[:, 0], index + jitter], axis=1), "z", ""
    if dim == 2:
        return z, "z1", "z2"
    if len(z) < 2:
        raise ValueError(f"z must have at least 2 rows to compute principal components, got shape {z.shape}")
    xy, explained = _pca_2d(z)
    return xy, f"PC1 ({100 * explained[0]:.1f}% var)", f"PC2 ({100 * explained[1]:.1f}% var)"


def save_latent_scatter(
    z: Union[torch.Tensor, np.ndarray], labels: Optional[Union[torch.Tensor, np.ndarray]], path: str,
    title: Optional[str] = None,
) -> str:
    """
    Saves a scatter plot of latent codes as a PNG.

    For ``D == 1`` codes are plotted along the x axis, one jittered strip per
    label; for ``D == 2`` they are plotted directly; for ``D > 2`` they are
    projected onto their first two principal components (axes labelled with
    the fraction of variance explained). Points are coloured by label with
    the discrete ``tab10`` colormap (``tab20`` for more than 10 labels;
    colours repeat beyond 20) and a legend.

    :param z: tensor or array of shape ``(N, D)``, e.g. posterior means.
    :param labels: integer tensor or array of shape ``(N,)``, or ``None`` to
        draw every point in a single colour without a legend.
    :param path: destination PNG path; parent directories are created.
    :param str title: optional figure title.
    :returns: the path written.
    :rtype: str
    """
    z = _to_numpy(z)
    if z.ndim != 2 or z.size == 0:
        raise ValueError(f"z must have shape (N, D) with N, D >= 1, got shape {z.shape}")
    z = z.astype(np.float64)
    classes, index = _latent_labels(labels, len(z))
    xy, xlabel, ylabel = _latent_coordinates(z, index)
    cmap = colormaps["tab10" if len(classes) <= 10 else "tab20"]
    colors = [cmap(i % cmap.N) for i in range(len(classes))]

    fig = _new_figure((6.0, 5.0))
    ax = fig.add_subplot()
    ax.scatter(xy[:, 0], xy[:, 1], c=[colors[i] for i in index], s=_SCATTER_SIZE, alpha=0.8, linewidths=0)
    names = [] if labels is None else [str(c) for c in classes]
    if z.shape[1] == 1:  # one strip per label; without labels the y axis is pure jitter
        ax.set_yticks(range(len(names)), names)
        ylabel = "label" if names else ""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if names:
        handles = [Line2D([], [], marker="o", linestyle="", color=color) for color in colors]
        ax.legend(handles, names, title="label", loc="upper left", bbox_to_anchor=(1.02, 1.0))
    if title is not None:
        ax.set_title(title)
    return _save_figure(fig, path, bbox_inches="tight")


def _history_series(history, key):
    """
    Returns ``(epochs, values)`` for the entries of ``history`` whose ``key``
    is present and not ``None``.
    """
    points = [(entry["epoch"], float(entry[key])) for entry in history if entry.get(key) is not None]
    return [p[0] for p in points], [p[1] for p in points]


def save_training_curves(history: Sequence[Mapping[str, Any]], path: str, title: Optional[str] = None) -> str:
    """
    Saves ELBO-versus-epoch training curves as a PNG.

    :param list history: one dict per epoch with keys ``"epoch"`` and
        ``"train_elbo"`` and optionally ``"test_elbo"`` (nats per example);
        ``"test_elbo"`` may be missing or ``None`` for some epochs, which are
        then skipped on the test curve.
    :param path: destination PNG path; parent directories are created.
    :param str title: optional figure title.
    :returns: the path written.
    :rtype: str
    """
    if len(history) == 0:
        raise ValueError("history must contain at least one epoch, got 0 entries")
    for i, entry in enumerate(history):
        for key in ("epoch", "train_elbo"):
            if key not in entry:
                raise ValueError(f"history[{i}] must have key {key!r}, got keys {sorted(entry)}")

    fig = _new_figure((6.0, 4.0))
    ax = fig.add_subplot()
    for key, label in (("train_elbo", "train"), ("test_elbo", "test")):
        epochs, values = _history_series(history, key)
        if epochs:
            ax.plot(epochs, values, marker="o", markersize=3, label=label)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("ELBO (nats per example)")
    ax.grid(alpha=0.3)
    ax.legend()
    if title is not None:
        ax.set_title(title)
    return _save_figure(fig, path, bbox_inches="tight")
