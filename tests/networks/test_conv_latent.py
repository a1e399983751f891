"""
Tests of the convolutional networks around a flat latent vector
(pyprobvae.networks.conv_latent): shapes for the supported image sizes with
any leading batch dimensions, the layout the likelihoods read, the shapes
they refuse, and the conditioning wrapper they are used with.
"""

import pytest
import torch

from pyprobvae.config import ConfigError
from pyprobvae.likelihoods import CategoricalLikelihood
from pyprobvae.networks import MLP, Conditioned, ConvFeatureMap, ConvVectorDecoder, ConvVectorEncoder
from pyprobvae.networks.conv import conv_decoder_body, likelihood_layout
from pyprobvae.networks.conv_latent import conv_image_grid

pytestmark = pytest.mark.usefixtures("one_thread")

LATENT_DIM = 5
IMAGES = [(1, 8, 8), (3, 8, 8), (1, 28, 28), (3, 28, 28), (1, 32, 32), (3, 32, 32)]
GRIDS = {8: (1, (4, 4)), 28: (2, (7, 7)), 32: (3, (4, 4))}


@pytest.mark.parametrize("data_shape", IMAGES, ids=lambda s: "x".join(map(str, s)))
def test_shapes_keep_leading_batch_dimensions(data_shape):
    halvings, grid = GRIDS[data_shape[1]]
    assert conv_image_grid(data_shape) == (halvings, grid)
    torch.manual_seed(0)
    encoder = ConvVectorEncoder(data_shape, features=12, channels=(4, 8), residual_blocks=1, map_channels=3)
    decoder = ConvVectorDecoder(data_shape, LATENT_DIM, outputs_per_dim=2, channels=(8, 4), residual_blocks=1, grid_channels=3)
    assert encoder[0].out_features == 3 * grid[0] * grid[1] and encoder.out_features == 12
    x = torch.rand(2, 3, *data_shape)  # (samples, batch, C, H, W)
    assert encoder(x).shape == (2, 3, 12)
    assert encoder(x[0, 0]).shape == (12,)
    z = torch.randn(2, 3, LATENT_DIM)
    assert decoder(z).shape == (2, 3, 2 * torch.Size(data_shape).numel())
    assert decoder(z[0]).shape == (3, 2 * torch.Size(data_shape).numel())
    torch.testing.assert_close(decoder(z)[1], decoder(z[1]))


def test_decoder_outputs_are_laid_out_as_the_likelihoods_read_them():
    """Output k of pixel (c, i, j) sits at ((c * H + i) * W + j) * K + k, as the likelihoods reshape them."""
    maps = torch.arange(2 * 3 * 2 * 4 * 5, dtype=torch.float32).reshape(2, 3 * 2, 4, 5)  # (n, C * K, H, W)
    flat = likelihood_layout(maps, (3, 4, 5), 2, (2,))
    for c, i, j, k in [(0, 0, 0, 1), (2, 3, 4, 0), (1, 2, 3, 1)]:
        assert flat[1, ((c * 4 + i) * 5 + j) * 2 + k] == maps[1, c * 2 + k, i, j]
    likelihood = CategoricalLikelihood((1, 8, 8), num_levels=3)
    decoder = ConvVectorDecoder((1, 8, 8), LATENT_DIM, likelihood.outputs_per_dim, channels=(4,), residual_blocks=0)
    assert decoder(torch.randn(4, LATENT_DIM)).shape == (4, likelihood.num_outputs)


@pytest.mark.parametrize(
    "data_shape,problem",
    [((2, 28, 28), "got data_shape (2, 28, 28)"), ((5, 7, 7), "got data_shape (5, 7, 7)"), ((16,), "got data_shape (16,)"),
     ((1, 5, 5), "do not halve"), ((1, 28, 27), "do not halve"), ((1, 28, 28, 1), "got data_shape (1, 28, 28, 1)")],
)
def test_shapes_the_networks_refuse(data_shape, problem):
    for build in (lambda: ConvFeatureMap(data_shape), lambda: ConvVectorDecoder(data_shape, LATENT_DIM, 1)):
        with pytest.raises(ConfigError, match="C = 1 \\(grey\\) or 3 \\(colour\\) and even sides of at least 8") as error:
            build()
        assert problem in str(error.value) and "network='mlp'" in str(error.value)


def test_inputs_of_the_wrong_shape_are_refused():
    with pytest.raises(ValueError, match=r"images have shape \(2, 1, 8, 9\); expected \(\*batch, 1, 8, 8\)"):
        ConvFeatureMap((1, 8, 8))(torch.rand(2, 1, 8, 9))
    with pytest.raises(ValueError, match=r"decoder inputs have shape \(2, 4\); expected \(\*batch, 5\)"):
        ConvVectorDecoder((1, 8, 8), LATENT_DIM, 1)(torch.rand(2, 4))


def test_decoder_body_without_output_convolution_ends_at_the_last_upsampling():
    body = conv_decoder_body(2, 3, 7, channels=(8, 4), upsamplings=2, residual_blocks=0, output_conv=False)
    assert isinstance(body[-1], torch.nn.ConvTranspose2d) and body[-1].out_channels == 7
    assert body(torch.rand(2, 3, 4, 4)).shape == (2, 7, 16, 16)
    with pytest.raises(ValueError, match="at least one upsampling"):
        conv_decoder_body(2, 3, 7, (8,), upsamplings=0, residual_blocks=0, output_conv=False)


def test_conditioned_body_and_broadcast_condition():
    """The condition joins the body's features, and is broadcast over extra leading dimensions of the inputs."""
    torch.manual_seed(0)
    body = ConvFeatureMap((1, 8, 8), channels=(4,), residual_blocks=0, map_channels=2)
    head = MLP(body.out_features + 3, (6,))
    net = Conditioned(head, (1, 8, 8), body)
    x, label = torch.rand(4, 1, 8, 8), torch.eye(3)[[0, 1, 2, 0]]
    torch.testing.assert_close(net(x, label), head(torch.cat([body(x), label], -1)))
    assert net(x.expand(5, 4, 1, 8, 8), label).shape == (5, 4, 6)
    flat = Conditioned(MLP(LATENT_DIM + 3, (6,)), LATENT_DIM)
    z = torch.randn(5, 4, LATENT_DIM)
    torch.testing.assert_close(flat(z, label)[2], flat(z[2], label))
