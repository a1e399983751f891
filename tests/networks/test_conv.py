"""
Tests of the convolutional encoders and decoders over code grids
(pyprobvae.convnets): shapes, layouts the likelihoods rely on, receptive
fields and argument errors.
"""

import pytest
import torch

from pyprobvae.likelihoods import (
    BernoulliLikelihood,
    CategoricalLikelihood,
    TokenLikelihood,
)
from pyprobvae.networks.conv import (
    ConvDecoder1d,
    ConvDecoder2d,
    ConvEncoder1d,
    ConvEncoder2d,
    default_downsamplings,
)

pytestmark = pytest.mark.usefixtures("one_thread")

CODE_DIM = 8
BATCH = 3


def _generator(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize(
    "data_shape,grid_shape",
    [((1, 28, 28), (7, 7)), ((1, 8, 8), (4, 4)), ((3, 16, 12), (8, 6))],
    ids=["mnist", "digits", "rgb"],
)
def test_2d_shapes_round_trip(data_shape, grid_shape):
    torch.manual_seed(0)
    encoder = ConvEncoder2d(data_shape, CODE_DIM)
    decoder = ConvDecoder2d(data_shape, CODE_DIM, outputs_per_dim=5)
    assert encoder.grid_shape == decoder.grid_shape == grid_shape
    assert encoder.num_positions == decoder.num_positions == grid_shape[0] * grid_shape[1]
    x = torch.rand(BATCH, *data_shape, generator=_generator())
    z = encoder(x)
    assert z.shape == (BATCH, encoder.num_positions, CODE_DIM)
    assert decoder(z).shape == (BATCH, 5 * torch.Size(data_shape).numel())
    # more leading batch dimensions are kept
    assert encoder(x.expand(2, *x.shape)).shape == (2, BATCH, encoder.num_positions, CODE_DIM)
    assert decoder(z.expand(2, *z.shape)).shape == (2, BATCH, 5 * torch.Size(data_shape).numel())


def test_default_downsamplings_rule():
    assert default_downsamplings((28, 28)) == 2
    assert default_downsamplings((8, 8)) == 1
    assert default_downsamplings((32, 32)) == 3
    assert default_downsamplings((16, 12)) == 1  # 12 / 4 = 3 < 4
    assert default_downsamplings((5, 5)) == 0
    encoder = ConvEncoder2d((2, 5, 5), CODE_DIM)  # no downsampling: a 5x5 grid
    assert encoder.grid_shape == (5, 5)
    assert encoder(torch.zeros(1, 2, 5, 5)).shape == (1, 25, CODE_DIM)


def test_encoder_positions_are_raster_order():
    torch.manual_seed(0)
    encoder = ConvEncoder2d((3, 16, 12), CODE_DIM)
    x = torch.rand(BATCH, 3, 16, 12, generator=_generator())
    grid = encoder.body(x)  # (batch, code_dim, 8, 6)
    codes = encoder(x)
    for i, j in [(0, 0), (0, 5), (1, 0), (7, 5), (3, 2)]:
        torch.testing.assert_close(codes[:, i * 6 + j], grid[:, :, i, j], rtol=0, atol=0)


def test_decoder_layout_is_data_shape_then_outputs():
    """Channel c * K + k of the last convolution is output (c, h, w, k)."""
    torch.manual_seed(0)
    data_shape, K = (3, 8, 8), 4
    decoder = ConvDecoder2d(data_shape, CODE_DIM, K)
    z = torch.randn(BATCH, decoder.num_positions, CODE_DIM, generator=_generator())
    out = decoder(z).reshape(BATCH, *data_shape, K)
    grid = z.reshape(BATCH, 4, 4, CODE_DIM).permute(0, 3, 1, 2)
    raw = decoder.body(grid)  # (batch, 3 * K, 8, 8)
    assert raw.shape == (BATCH, 3 * K, 8, 8)
    for c, h, w, k in [(0, 0, 0, 0), (2, 7, 7, 3), (1, 3, 5, 2), (2, 0, 6, 1)]:
        torch.testing.assert_close(out[:, c, h, w, k], raw[:, c * K + k, h, w], rtol=0, atol=0)


@pytest.mark.parametrize("data_shape", [(1, 28, 28), (1, 8, 8), (3, 16, 12)], ids=["mnist", "digits", "rgb"])
def test_decoder_outputs_feed_the_likelihoods(data_shape):
    torch.manual_seed(0)
    z = torch.randn(BATCH, ConvEncoder2d(data_shape, CODE_DIM).num_positions, CODE_DIM, generator=_generator())
    categorical = CategoricalLikelihood(data_shape, 17)
    output = ConvDecoder2d(data_shape, CODE_DIM, categorical.outputs_per_dim)(z)
    assert output.shape == (BATCH, categorical.num_outputs)
    x = torch.randint(0, 17, (BATCH, *data_shape), generator=_generator(1)) / 16
    assert categorical(output).log_prob(x).shape == (BATCH,)

    bernoulli = BernoulliLikelihood(data_shape)
    output = ConvDecoder2d(data_shape, CODE_DIM, bernoulli.outputs_per_dim)(z)
    assert output.shape == (BATCH, bernoulli.num_outputs)
    assert bernoulli(output).log_prob((x > 0.5).float()).shape == (BATCH,)


def test_encoder_receptive_field_is_local():
    """On 28x28, grid cell (0, 0) sees pixels 0..18 of each side: not the far corner."""
    torch.manual_seed(0)
    encoder = ConvEncoder2d((1, 28, 28), CODE_DIM)
    x = torch.rand(1, 1, 28, 28, generator=_generator(), requires_grad=True)
    (first,) = torch.autograd.grad(encoder(x)[0, 0].sum(), x)
    assert first[0, 0, 0, 0] != 0
    assert (first[0, 0, 19:, :] == 0).all() and (first[0, 0, :, 19:] == 0).all()
    (last,) = torch.autograd.grad(encoder(x)[0, -1].sum(), x)
    assert last[0, 0, 27, 27] != 0 and last[0, 0, 0, 0] == 0


def test_2d_argument_errors():
    with pytest.raises(ValueError, match=r"\(28, 28\) is not divisible by 2\*\*3 = 8"):
        ConvEncoder2d((1, 28, 28), CODE_DIM, downsamplings=3)
    with pytest.raises(ValueError, match="not divisible by 2\\*\\*2"):
        ConvDecoder2d((1, 30, 30), CODE_DIM, 1, upsamplings=2)
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        ConvEncoder2d((28, 28), CODE_DIM)
    with pytest.raises(ValueError, match="channels"):
        ConvDecoder2d((1, 8, 8), CODE_DIM, 1, channels=())
    encoder = ConvEncoder2d((1, 8, 8), CODE_DIM)
    with pytest.raises(ValueError, match=r"images have shape \(2, 8, 8\); expected \(\*batch, 1, 8, 8\)"):
        encoder(torch.zeros(2, 8, 8))
    decoder = ConvDecoder2d((1, 8, 8), CODE_DIM, 1)
    with pytest.raises(ValueError, match=r"codes have shape \(2, 15, 8\); expected \(\*batch, 16, 8\)"):
        decoder(torch.zeros(2, 15, CODE_DIM))


def test_explicit_sampling_counts_and_widths():
    encoder = ConvEncoder2d((1, 28, 28), CODE_DIM, channels=(4, 8, 16), downsamplings=1, residual_blocks=0)
    decoder = ConvDecoder2d((1, 28, 28), CODE_DIM, 2, channels=(16, 8), upsamplings=1, residual_blocks=1)
    assert encoder.grid_shape == decoder.grid_shape == (14, 14)
    z = encoder(torch.zeros(BATCH, 1, 28, 28))
    assert z.shape == (BATCH, 196, CODE_DIM)
    assert decoder(z).shape == (BATCH, 2 * 28 * 28)


# ------------------------------------------------------------ 1-D


def test_1d_shapes_and_token_likelihood_layout():
    torch.manual_seed(0)
    seq_len, vocab = 32, 11
    encoder = ConvEncoder1d(seq_len, vocab, CODE_DIM, embed_dim=6, channels=(16, 16))
    decoder = ConvDecoder1d(seq_len, CODE_DIM, vocab, channels=(16, 16))
    assert encoder.num_positions == decoder.num_positions == 8
    tokens = torch.randint(0, vocab, (BATCH, seq_len), generator=_generator())
    z = encoder(tokens)
    assert z.shape == (BATCH, 8, CODE_DIM)
    output = decoder(z)
    assert output.shape == (BATCH, seq_len * vocab)
    assert encoder(tokens.expand(2, BATCH, seq_len)).shape == (2, BATCH, 8, CODE_DIM)

    # logits of one position are contiguous: output (t, v) is channel v at position t
    raw = decoder.body(z.transpose(1, 2))  # (batch, vocab, seq_len)
    torch.testing.assert_close(output.reshape(BATCH, seq_len, vocab), raw.transpose(1, 2), rtol=0, atol=0)
    likelihood = TokenLikelihood((seq_len,), vocab)
    log_prob = likelihood(output).log_prob(tokens)
    assert log_prob.shape == (BATCH,)
    expected = raw.log_softmax(1).gather(1, tokens.unsqueeze(1)).sum((1, 2))
    torch.testing.assert_close(log_prob, expected)


def test_1d_positions_are_local():
    torch.manual_seed(0)
    encoder = ConvEncoder1d(64, 5, CODE_DIM, embed_dim=4, channels=(8, 8))
    tokens = torch.zeros(1, 64, dtype=torch.int64)
    changed = tokens.clone()
    changed[0, -1] = 3
    codes, changed_codes = encoder(tokens), encoder(changed)
    torch.testing.assert_close(codes[:, 0], changed_codes[:, 0], rtol=0, atol=0)
    assert not torch.equal(codes[:, -1], changed_codes[:, -1])


def test_1d_argument_errors():
    with pytest.raises(ValueError, match=r"\(30,\) is not divisible by 2\*\*2 = 4"):
        ConvEncoder1d(30, 5, CODE_DIM)
    with pytest.raises(ValueError, match=r"\(12,\) is not divisible by 2\*\*3 = 8"):
        ConvDecoder1d(12, CODE_DIM, 5, upsamplings=3)
    assert ConvEncoder1d(30, 5, CODE_DIM, downsamplings=1).num_positions == 15
    encoder = ConvEncoder1d(16, 5, CODE_DIM)
    with pytest.raises(ValueError, match=r"token ids have shape \(2, 15\); expected \(\*batch, 16\)"):
        encoder(torch.zeros(2, 15, dtype=torch.int64))
    with pytest.raises(ValueError, match="codes have shape"):
        ConvDecoder1d(16, CODE_DIM, 5)(torch.zeros(2, 4, CODE_DIM + 1))
