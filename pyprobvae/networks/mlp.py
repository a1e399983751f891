"""
Multilayer perceptrons, and the wrapper that feeds a condition vector (a
one-hot label) to a network.
"""

import math
from typing import List, Optional, Sequence, Union

import torch
from torch import nn


class MLP(nn.Sequential):
    """
    A multilayer perceptron ``in_features -> hidden[0] -> ... -> out_features``
    with a nonlinearity after every hidden layer.

    Inputs of shape ``(*batch, *in_shape)`` have their trailing ``in_shape``
    dimensions flattened first, so images can be fed as they are and any
    number of leading batch dimensions is kept. With
    ``out_features=None`` the network ends at the last hidden activation: that
    is how encoders are built, the variational family adding its own output
    layer on these features.

    :param in_shape: shape of one input, e.g. ``(1, 28, 28)``, or its number
        of features.
    :type in_shape: int or sequence of int
    :param hidden: widths of the hidden layers, e.g. ``(400,)``; may be empty.
    :type hidden: sequence of int
    :param out_features: number of outputs of a final linear layer, or None
        for no output layer.
    :type out_features: int or None
    :param type activation: nonlinearity class, instantiated once per hidden
        layer.
    """

    def __init__(
        self,
        in_shape: Union[int, Sequence[int]],
        hidden: Sequence[int],
        out_features: Optional[int] = None,
        activation: type = nn.ReLU,
    ) -> None:
        in_shape = (in_shape,) if isinstance(in_shape, int) else tuple(in_shape)
        in_features = math.prod(in_shape)
        widths = [in_features, *hidden]
        layers: List[nn.Module] = [nn.Flatten(start_dim=-len(in_shape))] if len(in_shape) > 1 else []
        for width_in, width_out in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(width_in, width_out), activation()]
        if out_features is not None:
            layers.append(nn.Linear(widths[-1], out_features))
        super().__init__(*layers)
        self.in_features = in_features
        self.out_features = widths[-1] if out_features is None else out_features


class Conditioned(nn.Module):
    r"""
    A network that also sees a condition vector, such as a one-hot label:
    ``forward(inputs, condition) = net(concat(body(inputs), condition))``,
    where ``body`` maps the inputs to flat features, by default flattening
    them. This is how the conditional VAE feeds the label to its encoder
    (:math:`q(z \mid x, y)`) and decoder (:math:`p(x \mid z, y)`): with
    MLPs the label joins the flattened input, with convolutional networks
    the flattened feature map of the images
    (:class:`~pyprobvae.networks.conv_latent.ConvFeatureMap`).

    The condition, shape ``(batch, condition_features)``, is broadcast
    against any further leading dimensions of the inputs, e.g. the
    ``(samples, batch, latent_dim)`` codes of the stratified estimator.

    :param torch.nn.Module net: takes the features of ``body`` and the
        ``condition_features`` concatenated: ``prod(in_shape) +
        condition_features`` input features without a ``body``.
    :param in_shape: shape of one input, e.g. ``(1, 8, 8)``, or its number of
        features.
    :type in_shape: int or sequence of int
    :param body: maps inputs ``(*batch, *in_shape)`` to features ``(*batch,
        features)``; None to flatten them.
    :type body: torch.nn.Module or None
    """

    def __init__(self, net: nn.Module, in_shape: Union[int, Sequence[int]], body: Optional[nn.Module] = None) -> None:
        super().__init__()
        self.net = net
        self.in_shape = (in_shape,) if isinstance(in_shape, int) else tuple(in_shape)
        self.body = body

    def forward(self, inputs: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        if self.body is not None:
            features = self.body(inputs)
        else:
            features = inputs.flatten(-len(self.in_shape)) if len(self.in_shape) > 1 else inputs
        condition = condition.to(features.dtype).expand(features.shape[:-1] + condition.shape[-1:])
        return self.net(torch.cat([features, condition], -1))
