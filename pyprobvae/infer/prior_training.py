"""
Fitting a prior over discrete codes (stage 2 of a VQ-VAE) by maximum
likelihood, with the one training loop (:class:`~pyprobvae.infer.loop.Trainer`).
"""

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn

from ..config import setting
from ..data import iterate_minibatches
from ..distributed import LOCAL, World, current_world
from ..priors.transformer import TransformerPrior
from .loop import LoopConfig, Monitor, Objective, RandomState, Trainer

# Batch size of the held-out NLL, which needs no gradients.
EVAL_BATCH_SIZE = 1000


@dataclass
class PriorTrainConfig(LoopConfig):
    """Settings of :func:`train_prior`: the loop's, with their own defaults."""

    epochs: int = setting(50, minimum=1, maximum=100_000)
    """Passes over the training codes."""
    batch_size: int = setting(32, minimum=1, maximum=2**24)
    """Code sequences per step (small: the code sets of small data sets need many steps)."""
    validation_share: float = setting(0.1, above=0, below=1)
    """Share of the training codes held out to choose the epoch whose parameters the prior keeps."""


class CodeLogLikelihood(nn.Module):
    """``forward(codes)`` is ``prior.log_prob(codes)``, per sequence: the module that trains (and that ``DistributedDataParallel`` wraps)."""

    def __init__(self, prior: TransformerPrior) -> None:
        super().__init__()
        self.prior = prior

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        return self.prior.log_prob(codes)


class CodeNLL(Objective):
    r""":math:`-\log p(c_n)` in nats per sequence, with teacher forcing (the trainer takes the mean)."""

    terms = ("NLL",)

    def __init__(self, prior: TransformerPrior) -> None:
        self.network = CodeLogLikelihood(prior)

    def __call__(  # type: ignore[override]  # a batch of this objective is its codes alone
        self, network: nn.Module, codes: torch.Tensor, *, step: int
    ) -> Tuple[torch.Tensor, Tuple[torch.Tensor]]:
        nll = -network(codes)
        return nll, (nll,)

    def record(self, means: Dict[str, float]) -> dict:
        return {"train_nll": means["NLL"]}


@torch.no_grad()
def dataset_nll(prior: TransformerPrior, codes: torch.Tensor, world: World = LOCAL) -> float:
    r"""
    Mean :math:`-\log p(c)` over the rows of ``codes`` (nats per sequence),
    in batches; under ``torch.distributed`` each rank takes a share of the rows.
    """

    def nll_sum(part):
        batches = iterate_minibatches(len(part), EVAL_BATCH_SIZE, False, device=codes.device)
        return sum(-prior.log_prob(codes[part[idx]]).double().sum() for idx in batches)

    return world.sum_over_shards(len(codes), codes.device, nll_sum) / len(codes)


def train_prior(
    prior: TransformerPrior,
    train_codes: torch.Tensor,
    test_codes: Optional[torch.Tensor] = None,
    config: Optional[PriorTrainConfig] = None,
    progress: bool = True,
    validation_codes: Optional[torch.Tensor] = None,
    monitor: Optional[Monitor] = None,
) -> List[dict]:
    r"""
    Fit ``prior`` (a module with ``log_prob(codes)`` and ``check_codes``, as
    :class:`~pyprobvae.priors.transformer.TransformerPrior`) by minibatch
    descent on

    .. math::

        \mathrm{loss} = -\operatorname{mean}_n \log p(c_n) \quad \text{(nats per sequence)},

    with the optimizer of ``config`` (Adam, no weight decay; dropout
    regularizes). The codes are checked once (shape and values) and moved to
    the prior's device; the shuffling and dropout draw from generators seeded
    by ``config.seed``, so a prior initialized the same way gives the same
    numbers. After each epoch the held-out NLL is computed in eval mode.
    A NaN or infinite loss stops training, naming the step, with the
    parameters rolled back to the start of the epoch.

    With ``validation_codes`` (held out from the training codes, not the
    test codes) training stops early in effect: the prior ends with the
    parameters of the epoch with the lowest validation NLL. A transformer
    over the codes of a small data set overfits within tens of epochs
    (on digits, 1437 sequences, the held-out NLL rises after about 10).

    :param torch.nn.Module prior: the prior to train, in place.
    :param torch.Tensor train_codes: integer codes ``(N, L)``, :math:`N \ge 1`.
    :param test_codes: held-out codes ``(M, L)``, or None.
    :param PriorTrainConfig config: the settings (defaults if None).
    :param bool progress: show a progress bar with the running NLL.
    :param validation_codes: codes ``(V, L)`` that choose the epoch
        whose parameters the prior keeps, or None to keep the last.
    :param monitor: what follows the training (:class:`~pyprobvae.infer.loop.Monitor`,
        e.g. TensorBoard), on this process; None: nothing.
    :raises NonFiniteLossError: on a NaN or infinite loss.
    :return: the history, one dict per epoch with ``epoch``, ``train_nll``
        (running mean over the epoch, in train mode), ``validation_nll`` and
        ``test_nll`` (if given) in nats per sequence, and ``seconds``; with
        validation codes, the kept epoch's record has ``"kept": True``. The
        prior is left in eval mode.
    """
    config = config or PriorTrainConfig()
    train_codes = prior.check_codes(train_codes, full_length=True, values=True)
    test_codes = None if test_codes is None else prior.check_codes(test_codes, full_length=True, values=True)
    if validation_codes is not None:
        validation_codes = prior.check_codes(validation_codes, full_length=True, values=True)
    if len(train_codes) < 1:
        raise ValueError("train_codes holds no sequences")
    world = current_world()
    random = RandomState(config.seed, train_codes.device, world=world)
    trainer = Trainer(CodeNLL(prior), config, random, world, monitor)
    best: Dict[str, Any] = {"nll": math.inf, "state": None, "epoch": None}

    def evaluate(epoch):
        numbers = {}
        if validation_codes is not None:
            numbers["validation_nll"] = dataset_nll(prior, validation_codes, world)
            if numbers["validation_nll"] < best["nll"]:
                best.update(nll=numbers["validation_nll"], epoch=epoch)
                best["state"] = {name: value.detach().clone() for name, value in prior.state_dict().items()}
        if test_codes is not None:
            numbers["test_nll"] = dataset_nll(prior, test_codes, world)
        return numbers

    history = trainer.run(
        (train_codes,), evaluate=evaluate if validation_codes is not None or test_codes is not None else None,
        progress=progress,
    )
    if best["state"] is not None:
        prior.load_state_dict(best["state"])
        history[best["epoch"] - 1]["kept"] = True
    prior.eval()
    return history
