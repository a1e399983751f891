import ast
import inspect
import os

import numpy as np
import pytest
import torch
from matplotlib.image import imread

from pyprobvae import plots
from pyprobvae.plots import (
    _pca_2d,
    image_grid,
    save_image_grid,
    save_interpolation,
    save_latent_scatter,
    save_reconstructions,
    save_training_curves,
)


def assert_png(path):
    assert os.path.isfile(path)
    image = imread(path)
    assert image.ndim in (2, 3)
    assert image.shape[0] > 0 and image.shape[1] > 0
    assert image.std() > 0  # not a blank canvas
    leftovers = [f for f in os.listdir(os.path.dirname(path)) if f.endswith(".tmp")]
    assert leftovers == []
    return image


@pytest.mark.parametrize("padding", [0, 1, 2])
def test_image_grid_shape(padding):
    images = np.random.rand(10, 1, 5, 7)
    grid = image_grid(images, nrow=4, padding=padding)
    assert grid.shape == (3 * (5 + padding) + padding, 4 * (7 + padding) + padding)


def test_image_grid_default_nrow_and_short_row():
    assert image_grid(torch.rand(10, 4, 4)).shape == (3 * 5 + 1, 4 * 5 + 1)
    # fewer images than nrow: the grid is only as wide as the images
    assert image_grid(torch.rand(2, 4, 4), nrow=8).shape == (1 * 5 + 1, 2 * 5 + 1)


def test_image_grid_pixel_placement():
    images = torch.zeros(10, 1, 5, 7)
    known = torch.rand(5, 7)
    images[6, 0] = known  # row 1, column 2 with nrow=4
    grid = image_grid(images, nrow=4, padding=2)
    top, left = 2 + 1 * (5 + 2), 2 + 2 * (7 + 2)
    np.testing.assert_array_equal(grid[top : top + 5, left : left + 7], known.numpy())
    assert grid[0, 0] == 0.5  # separator
    assert np.all(grid[-7:-2, -9:-2] == 0.5)  # empty last cell


def test_image_grid_rgb_channel_first():
    images = np.zeros((3, 3, 4, 4))
    images[1, 0] = 1.0  # red image
    grid = image_grid(images, nrow=3)
    assert grid.shape == (6, 16, 3)
    np.testing.assert_array_equal(grid[1:5, 6:10], np.broadcast_to([1.0, 0.0, 0.0], (4, 4, 3)))


def test_image_grid_grayscale_equivalence_and_clipping():
    images = torch.linspace(-1, 2, 2 * 16).reshape(2, 1, 4, 4)
    grid = image_grid(images)
    assert grid.ndim == 2
    np.testing.assert_array_equal(grid, image_grid(images[:, 0]))
    assert grid.min() == 0.0 and grid.max() == 1.0


@pytest.mark.parametrize(
    "shape, message",
    [
        ((28, 28), r"images must have shape .*got shape \(28, 28\)"),
        ((4, 2, 8, 8), r"images must have shape .*got shape \(4, 2, 8, 8\)"),
        ((0, 8, 8), r"images must contain at least one"),
    ],
)
def test_image_grid_bad_shape(shape, message):
    with pytest.raises(ValueError, match=message):
        image_grid(np.zeros(shape))


def test_image_grid_bad_nrow():
    with pytest.raises(ValueError, match="nrow"):
        image_grid(np.zeros((2, 4, 4)), nrow=0)


def test_save_image_grid(tmp_path):
    path = str(tmp_path / "nested" / "dir" / "grid.png")
    assert save_image_grid(torch.rand(10, 1, 8, 8), path, nrow=4, title="samples") == path
    assert_png(path)


def test_save_image_grid_small_images_are_upscaled(tmp_path):
    path = save_image_grid(torch.rand(1, 8, 8), tmp_path / "digit.png")
    assert isinstance(path, str)
    image = assert_png(path)
    assert min(image.shape[:2]) >= 32


def test_save_image_grid_rgb(tmp_path):
    image = assert_png(save_image_grid(np.random.rand(6, 3, 6, 6), tmp_path / "rgb.png"))
    assert image.ndim == 3


def test_save_image_grid_overwrites(tmp_path):
    path = tmp_path / "grid.png"
    save_image_grid(np.zeros((1, 4, 4)), path)
    save_image_grid(np.random.rand(4, 4, 4), path)
    assert_png(str(path))


def test_save_reconstructions(tmp_path):
    x = torch.rand(20, 1, 8, 8)
    path = save_reconstructions(x, x.flip(-1), tmp_path / "recon.png", title="recon")
    assert_png(path)


def test_save_reconstructions_mismatch(tmp_path):
    with pytest.raises(ValueError, match=r"reconstructions of shape \(9, 1, 8, 8\)"):
        save_reconstructions(torch.rand(10, 1, 8, 8), torch.rand(9, 1, 8, 8), tmp_path / "r.png")
    with pytest.raises(ValueError, match=r"inputs must have shape .*got shape \(10, 64\)"):
        save_reconstructions(torch.rand(10, 64), torch.rand(10, 64), tmp_path / "r.png")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("shape", [(3, 7, 1, 8, 8), (3, 7, 8, 8), (2, 5, 3, 6, 6)])
def test_save_interpolation(tmp_path, shape):
    assert_png(save_interpolation(torch.rand(shape), tmp_path / "interp.png", title="interp"))


def test_save_interpolation_bad_shape(tmp_path):
    with pytest.raises(ValueError, match=r"strips must have shape \(R, S, .*got shape \(7, 8, 8\)"):
        save_interpolation(torch.rand(7, 8, 8), tmp_path / "interp.png")


@pytest.mark.parametrize("dim", [1, 2, 5])
@pytest.mark.parametrize("with_labels", [True, False])
def test_save_latent_scatter(tmp_path, dim, with_labels):
    z = torch.randn(200, dim)
    labels = torch.randint(0, 10, (200,)) if with_labels else None
    path = save_latent_scatter(z, labels, tmp_path / f"z{dim}.png", title="latent")
    assert_png(path)


def test_save_latent_scatter_many_classes(tmp_path):
    labels = np.arange(60) % 15
    assert_png(save_latent_scatter(np.random.randn(60, 2), labels, tmp_path / "z.png"))


@pytest.mark.parametrize(
    "z, labels, message",
    [
        (np.zeros(10), None, r"z must have shape \(N, D\).*got shape \(10,\)"),
        (np.zeros((10, 2, 1)), None, r"z must have shape \(N, D\).*got shape \(10, 2, 1\)"),
        (np.zeros((10, 2)), np.zeros(9, dtype=int), r"labels must have shape \(10,\).*got shape \(9,\)"),
        (np.zeros((10, 2)), np.zeros(10), r"labels must be integers"),
        (np.zeros((1, 3)), None, r"at least 2 rows.*got shape \(1, 3\)"),
    ],
)
def test_save_latent_scatter_bad_input(tmp_path, z, labels, message):
    with pytest.raises(ValueError, match=message):
        save_latent_scatter(z, labels, tmp_path / "z.png")


def test_pca_matches_numpy_principal_directions():
    rng = np.random.default_rng(0)
    rotation = np.linalg.qr(rng.normal(size=(5, 5)))[0]
    z = rng.normal(size=(500, 5)) * np.array([5.0, 3.0, 1.0, 0.5, 0.1]) @ rotation
    projection, explained = _pca_2d(z)

    centred = z - z.mean(0)
    eigenvalues, eigenvectors = np.linalg.eigh(np.cov(centred, rowvar=False))
    order = np.argsort(eigenvalues)[::-1]
    for k in range(2):
        expected = centred @ eigenvectors[:, order[k]]
        sign = np.sign(expected @ projection[:, k])
        np.testing.assert_allclose(projection[:, k], sign * expected, atol=1e-8)
        np.testing.assert_allclose(explained[k], eigenvalues[order[k]] / eigenvalues.sum())
    assert explained[0] > explained[1]


def test_pca_constant_codes():
    projection, explained = _pca_2d(np.ones((4, 3)))
    np.testing.assert_array_equal(projection, 0.0)
    np.testing.assert_array_equal(explained, 0.0)


def test_save_training_curves(tmp_path):
    history = [
        {"epoch": 1, "train_elbo": -200.0, "test_elbo": -210.0},
        {"epoch": 2, "train_elbo": torch.tensor(-150.0)},
        {"epoch": 3, "train_elbo": -120.0, "test_elbo": None},
        {"epoch": 4, "train_elbo": -110.0, "test_elbo": -118.0},
    ]
    assert_png(save_training_curves(history, tmp_path / "curves.png", title="ELBO"))
    assert_png(save_training_curves(history[1:3], tmp_path / "train_only.png"))


def test_save_training_curves_bad_history(tmp_path):
    with pytest.raises(ValueError, match="at least one epoch"):
        save_training_curves([], tmp_path / "c.png")
    with pytest.raises(ValueError, match=r"history\[1\] must have key 'train_elbo'"):
        save_training_curves([{"epoch": 1, "train_elbo": -1.0}, {"epoch": 2}], tmp_path / "c.png")


def test_failed_save_leaves_no_temp_file(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    def fail(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(Figure, "savefig", fail)
    with pytest.raises(RuntimeError, match="disk full"):
        save_image_grid(np.random.rand(4, 4, 4), tmp_path / "grid.png")
    assert os.listdir(tmp_path) == []


def test_module_does_not_use_pyplot():
    # pyplot would select a global backend; the module must use Figure + FigureCanvasAgg only
    tree = ast.parse(inspect.getsource(plots))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported |= {f"{node.module}.{alias.name}" for alias in node.names}
    assert imported and not any("pyplot" in name for name in imported)
