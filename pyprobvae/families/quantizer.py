r"""
The vector quantizer of a VQ-VAE (van den Oord et al. 2017).

An encoder maps an example :math:`x` to :math:`P` vectors :math:`z_e(x)_p` in
:math:`\mathbb{R}^D` (the positions of a feature map, say). The quantizer
replaces each of them with its nearest entry of a codebook
:math:`e_1, \dots, e_K` in :math:`\mathbb{R}^D`,

.. math::

    k_p = \operatorname*{arg\,min}_k \lVert z_e(x)_p - e_k \rVert^2, \qquad
    z_q(x)_p = e_{k_p},

and the decoder reconstructs :math:`x` from :math:`z_q(x)`.

**The variational view.** The posterior :math:`q(k \mid x)` is the one-hot
distribution on the nearest codes and the prior :math:`p(k)` is uniform over
the :math:`K` codes at every position, so

.. math::

    \mathrm{KL}(q(k \mid x) \,\|\, p(k))
    = \sum_p \sum_k q(k_p = k \mid x) \log\bigl(q(k_p = k \mid x)\, K\bigr)
    = P \log K,

a constant (:math:`q` puts probability one on one code, whose log-ratio is
:math:`\log(1 / (1/K))`). The ELBO is therefore
:math:`\mathbb{E}_q[\log p(x \mid z_q)] - P \log K`, and training only needs
the reconstruction term.

**The three loss terms.** With :math:`\operatorname{sg}` the stop-gradient
operator, a VQ-VAE minimizes, per example,

.. math::

    -\log p(x \mid z_q(x))
    + \sum_p \lVert \operatorname{sg}[z_e(x)_p] - e_{k_p} \rVert^2
    + \beta \sum_p \lVert z_e(x)_p - \operatorname{sg}[e_{k_p}] \rVert^2:

the reconstruction term trains the encoder and the decoder; the *codebook*
term moves each code towards the encoder outputs assigned to it (its
minimizer over :math:`e_k` is their mean, a k-means step); the *commitment*
term, weighted by :math:`\beta` (0.25 in van den Oord et al. 2017), keeps the
encoder's outputs close to the codes they chose, so that they cannot grow
without bound. This module returns the codebook and commitment terms
unweighted, summed over positions and dimensions, one value per example:
averaged over a batch they keep the same weight whatever the batch size.

**Straight-through gradient.** ``argmin`` has no useful derivative, so the
quantizer outputs

.. math::

    z_q = z_e + \operatorname{sg}[e_k - z_e],

whose value is the code (up to one rounding) and whose Jacobian
:math:`\partial z_q / \partial z_e` is the identity: the decoder's gradient
with respect to :math:`z_q` is copied unchanged to the encoder. The codebook
receives no reconstruction gradient; it learns through the codebook term, or,
with ``ema=True``, through exponential moving averages of the assigned
encoder outputs (appendix A.1 of van den Oord et al. 2017; Razavi et al.
2019), which replace the codebook term.

**References**

- van den Oord et al. 2017, "Neural Discrete Representation Learning",
  NeurIPS, arXiv:1711.00937.
- Razavi et al. 2019, "Generating Diverse High-Fidelity Images with
  VQ-VAE-2", NeurIPS, arXiv:1906.00446.
"""

import numbers
from typing import NamedTuple

import torch
from torch import nn

from ..distributed import current_world
from ..validation import is_validation_enabled


class QuantizerOutput(NamedTuple):
    r"""
    What :meth:`VectorQuantizer.forward` returns for encoder outputs ``z_e``
    of shape ``(batch, positions, code_dim)``.

    :ivar torch.Tensor z_q: the straight-through value
        :math:`z_e + \operatorname{sg}[e_k - z_e]`, shape
        ``(batch, positions, code_dim)``.
    :ivar torch.Tensor indices: the nearest code :math:`k` of each position,
        a long tensor of shape ``(batch, positions)``.
    :ivar torch.Tensor codebook_loss:
        :math:`\sum_p \lVert \operatorname{sg}[z_{e,p}] - e_{k_p} \rVert^2` per
        example, shape ``(batch,)``; its gradient reaches only the codebook.
        Zeros when the codebook learns by moving averages.
    :ivar torch.Tensor commitment_loss:
        :math:`\sum_p \lVert z_{e,p} - \operatorname{sg}[e_{k_p}] \rVert^2` per
        example, shape ``(batch,)``; its gradient reaches only ``z_e``. The
        caller applies the weight :math:`\beta`.
    """

    z_q: torch.Tensor
    indices: torch.Tensor
    codebook_loss: torch.Tensor
    commitment_loss: torch.Tensor


def _check_integer(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _nearest(points: torch.Tensor, codes: torch.Tensor, chunk_size: int) -> torch.Tensor:
    r"""
    :math:`\operatorname*{arg\,min}_k \lVert z_n - e_k \rVert^2` for every row
    :math:`z_n` of ``points`` ``(N, D)``, over the rows :math:`e_k` of
    ``codes`` ``(K, D)``, as
    :math:`\operatorname*{arg\,min}_k (\lVert e_k \rVert^2 - 2\, z_n \cdot e_k)`:
    the term :math:`\lVert z_n \rVert^2` is the same for every :math:`k`, so it
    is left out (it would only add rounding error). Blocks of at most
    :math:`c` = ``chunk_size`` rows by :math:`c` codes keep the memory at
    :math:`O(c^2)`; a running
    minimum over the blocks of codes keeps the first of tied codes, as
    ``argmin`` does.
    """
    code_norms = codes.pow(2).sum(-1)
    indices = torch.empty(points.size(0), dtype=torch.long, device=points.device)
    for start in range(0, points.size(0), chunk_size):
        rows = points[start : start + chunk_size]
        best = torch.full((rows.size(0),), float("inf"), dtype=points.dtype, device=points.device)
        best_index = torch.zeros(rows.size(0), dtype=torch.long, device=points.device)
        for first in range(0, codes.size(0), chunk_size):
            block = codes[first : first + chunk_size]
            scores = torch.addmm(code_norms[first : first + chunk_size], rows, block.T, alpha=-2)
            value, index = scores.min(-1)
            better = value < best
            best = torch.where(better, value, best)
            best_index = torch.where(better, index + first, best_index)
        indices[start : start + chunk_size] = best_index
    return indices


def _kmeans_seeds(points: torch.Tensor, count: int) -> torch.Tensor:
    r"""
    Starting centres for Lloyd's algorithm. With at least ``count`` rows,
    k-means++ seeding (Arthur & Vassilvitskii 2007): the first centre is a
    uniformly drawn row, each next one a row drawn with probability
    proportional to its squared distance
    :math:`\lVert z \rVert^2 - 2\, z \cdot c + \lVert c \rVert^2` to the
    nearest centre :math:`c` so far, which puts the seeds in distinct clusters
    with high probability. With fewer rows, every row and then rows drawn
    with replacement, jittered by 1e-3 of the data's scale so that the codes
    differ.
    """
    num_rows = points.size(0)
    if num_rows < count:
        extra = points[torch.randint(num_rows, (count - num_rows,), device=points.device)]
        scale = 1e-3 * points.std(correction=0).clamp_min(1e-3)
        return torch.cat([points, extra + scale * torch.randn_like(extra)])
    norms = points.pow(2).sum(-1)
    chosen = torch.empty(count, dtype=torch.long, device=points.device)
    distances = torch.full_like(norms, float("inf"))
    weights = torch.ones_like(norms)  # the first seed is uniform
    for i in range(count):
        seed = chosen[i] = torch.multinomial(weights, 1)[0]
        distances = torch.minimum(distances, norms - 2 * points @ points[seed] + norms[seed])
        distances[seed] = 0
        # the floor keeps the weights a distribution when every row is a seed already
        weights = distances.clamp_min(torch.finfo(points.dtype).tiny)
    return points[chosen]


def _kmeans(points: torch.Tensor, count: int, iterations: int, chunk_size: int):
    """
    ``iterations`` Lloyd iterations from :func:`_kmeans_seeds`: assign every
    row to its nearest centre, then move each centre to the mean of its rows
    (a centre without rows stays). Returns the centres (count, D) and the
    number of rows nearest to each, a long tensor (count,).
    """
    centres = _kmeans_seeds(points, count)
    for _ in range(iterations):
        assignment = _nearest(points, centres, chunk_size)
        sizes = torch.bincount(assignment, minlength=count)
        sums = torch.zeros_like(centres).index_add_(0, assignment, points)
        centres = torch.where(sizes.unsqueeze(-1) > 0, sums / sizes.clamp_min(1).unsqueeze(-1), centres)
    return centres, torch.bincount(_nearest(points, centres, chunk_size), minlength=count)


class VectorQuantizer(nn.Module):
    r"""
    Nearest-code quantization of encoder outputs with a learned codebook of
    ``codebook_size`` (:math:`K`) codes in :math:`\mathbb{R}^D`, :math:`D` =
    ``code_dim``; see the module
    docstring for the losses and the straight-through gradient.

    State changes happen only in training mode (``module.train()``), each
    time :meth:`forward` runs; in evaluation mode the forward is a pure
    function of the input and the codebook. In training mode:

    - **k-means initialization** (``kmeans_init=True``): the first forward
      sets the codebook to ``kmeans_iterations`` Lloyd iterations on the
      batch's encoder outputs (flattened over batch and positions), seeded by
      k-means++. The buffer ``initialized`` records it, so a module loaded
      from a checkpoint is not initialized again. Without it the codebook
      starts uniform in :math:`[-1/K, 1/K]`, as in van den Oord et al. 2017.
    - **moving averages** (``ema=True``): the codebook is a buffer, not a
      parameter, and with :math:`n_k` the number of positions of the batch
      assigned to code :math:`k` and :math:`s_k` the sum of their encoder
      outputs, each forward updates, with :math:`\gamma` = ``decay`` and
      :math:`\epsilon` = ``epsilon``,

      .. math::

          N_k \leftarrow \gamma N_k + (1 - \gamma)\, n_k, \qquad
          m_k \leftarrow \gamma m_k + (1 - \gamma)\, s_k,

          e_k \leftarrow m_k / \tilde N_k, \qquad
          \tilde N_k = \frac{N_k + \epsilon}{\sum_j N_j + K \epsilon} \sum_j N_j.

      The buffer ``cluster_size`` keeps the unsmoothed :math:`N_k`, so that
      it stays a moving average of counts; the Laplace-smoothed
      :math:`\tilde N_k`, which has the same total, is used only to divide,
      and keeps a code that is rarely assigned from dividing by (nearly)
      zero. ``code_sum`` keeps :math:`m_k`. Every code starts as one
      pseudo-observation at itself, :math:`N_k = 1` and :math:`m_k = e_k`;
      k-means initialization sets :math:`N_k` to the code's cluster size (at
      least 1) and :math:`m_k = N_k e_k`.
    - **usage** (always): the buffer ``usage`` keeps a moving average of
      each code's share of the assignments, relative to an even share: with
      :math:`n_k` of the batch's :math:`N` positions assigned to code
      :math:`k` and :math:`\lambda` = ``usage_decay``,

      .. math::

          u_k \leftarrow \lambda u_k + (1 - \lambda)\, K n_k / N,

      so that :math:`u_k` is near 1 for a code chosen as often as the average
      code, near 0 for one chosen rarely, and 0 in the limit for one never
      chosen. Every code starts at :math:`u_k = 1` (and again after k-means
      initialization).
    - **rare-code restart** (``min_usage > 0``): after the update, every code
      with :math:`u_k < u_\mathrm{min}` (:math:`u_\mathrm{min}` =
      ``min_usage``) is restarted. With
      :math:`r_n = \lVert z_n - e_{k_n} \rVert^2` the quantization error of
      the batch's encoder output :math:`z_n` (with the codes this forward
      used), the restarted codes, in increasing order of :math:`k`, move onto
      the outputs of largest, second largest, ... :math:`r_n` (ties by
      position; the outputs are reused cyclically if there are more such
      codes than outputs): onto the data that the codebook represents worst.
      Their usage becomes :math:`u_k = 1` and, with moving averages, their
      statistics :math:`N_k = 1, m_k = e_k`. A code that no position chooses
      is therefore restarted at the first step :math:`t` after its last start
      with :math:`\lambda^t < u_\mathrm{min}` (:math:`t = 7` with the
      defaults), and one chosen at a steady share :math:`s < u_\mathrm{min}`
      after about
      :math:`\log\bigl((1 - s) / (u_\mathrm{min} - s)\bigr) / \log(1 / \lambda)`
      steps: the rule keeps every code above a fraction ``min_usage`` of an
      even share, which keeps the codebook in use and its usage balanced.
      With small batches (a few positions per code, :math:`N / K`, or fewer)
      the shares are noisy; a ``usage_decay`` closer to 1 averages over more
      steps.

    **Under torch.distributed** (a process group of several ranks, as
    ``torchrun`` starts; :mod:`pyprobvae.distributed`) the codebook stays
    identical on every rank: the counts and sums of every update are
    all-reduced (one collective per training forward, of :math:`K (D + 1)`
    numbers), so the moving averages and the usage are those of the global
    batch; the k-means initialization runs on rank 0 over the gathered first
    batch and is broadcast; the restart candidates are each rank's
    :math:`K` worst rows, gathered, so that every rank restarts the same
    codes onto the same rows, the worst of the global batch. The result is
    that of one process on the global batch, up to the rounding of sums in
    another order.

    The k-means++ seeding draws from torch's global random number generator
    (which :func:`pyro.set_rng_seed` seeds) on the device of the encoder
    outputs; the other updates are deterministic. After the first training
    step a forward reads nothing back from the device (the initialization
    flag is remembered on the host, the usage update and the restarts are
    masked tensor operations), so that it costs no host synchronisation in a
    training step; the check that the encoder outputs are finite reads them,
    and runs only while validation is enabled (:mod:`pyprobvae.validation`).

    The defaults ``min_usage=0.5, usage_decay=0.9`` come from
    ``benchmarks/bench_vq.py`` (a convolutional VQ-VAE on digits, :math:`K = 64`):
    over 8 seeds they gave a lower test NLL than other thresholds, slower
    averages or restarts onto random outputs, with 62-64 codes in use and a
    perplexity of 49-59.

    :param int codebook_size: number of codes :math:`K \ge 1`.
    :param int code_dim: dimension :math:`D \ge 1` of the codes and encoder outputs.
    :param bool ema: learn the codebook by moving averages instead of the
        codebook loss.
    :param float decay: the decay of the codebook's moving averages
        (``ema=True``), in :math:`(0, 1)`.
    :param float epsilon: Laplace smoothing of the cluster sizes, :math:`> 0`.
    :param bool kmeans_init: initialize the codebook by k-means on the first
        training batch.
    :param int kmeans_iterations: number of Lloyd iterations, >= 0.
    :param float min_usage: restart a code whose moving-average usage
        :math:`u_k`, in units of an even share of the assignments, falls below
        this value, in :math:`[0, 1)`; 0 never restarts.
    :param float usage_decay: the decay :math:`\lambda` of the usage's moving
        average, in :math:`(0, 1)`; its time constant is
        :math:`1 / (1 - \lambda)` steps.
    :param int chunk_size: rows and codes per block of the nearest-code
        search, which needs memory for :math:`c^2` distances, :math:`c` =
        ``chunk_size``.
    """

    # buffers (the codebook is a parameter without ema)
    codebook: torch.Tensor
    cluster_size: torch.Tensor
    code_sum: torch.Tensor
    initialized: torch.Tensor
    usage: torch.Tensor

    def __init__(
        self,
        codebook_size: int,
        code_dim: int,
        ema: bool = False,
        decay: float = 0.99,
        epsilon: float = 1e-5,
        kmeans_init: bool = True,
        kmeans_iterations: int = 10,
        min_usage: float = 0.5,
        usage_decay: float = 0.9,
        chunk_size: int = 4096,
    ) -> None:
        super().__init__()
        _check_integer("codebook_size", codebook_size, 1)
        _check_integer("code_dim", code_dim, 1)
        _check_integer("kmeans_iterations", kmeans_iterations, 0)
        _check_integer("chunk_size", chunk_size, 1)
        if not 0 < decay < 1:
            raise ValueError(f"decay must lie in (0, 1), got {decay!r}")
        if not epsilon > 0:
            raise ValueError(f"epsilon must be positive, got {epsilon!r}")
        if not 0 <= min_usage < 1:
            raise ValueError(f"min_usage must lie in [0, 1), got {min_usage!r}")
        if not 0 < usage_decay < 1:
            raise ValueError(f"usage_decay must lie in (0, 1), got {usage_decay!r}")
        self.codebook_size = int(codebook_size)
        self.code_dim = int(code_dim)
        self.ema = ema
        self.decay = float(decay)
        self.epsilon = float(epsilon)
        self.kmeans_init = kmeans_init
        self.kmeans_iterations = int(kmeans_iterations)
        self.min_usage = float(min_usage)
        self.usage_decay = float(usage_decay)
        self.chunk_size = int(chunk_size)

        bound = 1.0 / self.codebook_size
        codebook = torch.empty(self.codebook_size, self.code_dim).uniform_(-bound, bound)
        if ema:
            self.register_buffer("codebook", codebook)
            self.register_buffer("cluster_size", torch.ones(self.codebook_size))
            self.register_buffer("code_sum", codebook.clone())
        else:
            self.codebook = nn.Parameter(codebook)
        self.register_buffer("initialized", torch.tensor(not kmeans_init))
        self.register_buffer("usage", torch.ones(self.codebook_size))
        self._known_initialized = not kmeans_init  # the buffer, remembered on the host once true

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._known_initialized = False  # read the loaded buffer on the next training step

    def extra_repr(self) -> str:
        return f"codebook_size={self.codebook_size}, code_dim={self.code_dim}, ema={self.ema}"

    def _check_last_dim(self, z: torch.Tensor, name: str) -> None:
        if z.dim() < 1 or z.size(-1) != self.code_dim:
            raise ValueError(f"{name} has shape {tuple(z.shape)}, but its last dimension must be code_dim={self.code_dim}")
        if z.dtype != self.codebook.dtype:
            raise ValueError(f"{name} has dtype {z.dtype}, but the codebook has dtype {self.codebook.dtype}")

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        r"""
        The index of the nearest code,
        :math:`\operatorname*{arg\,min}_k \lVert z - e_k \rVert^2`, of every
        vector :math:`z`; computed without gradient.

        :param torch.Tensor z: vectors of shape ``(..., code_dim)``.
        :return: a long tensor of shape ``(...)``.
        """
        self._check_last_dim(z, "z")
        with torch.no_grad():
            flat = z.detach().reshape(-1, self.code_dim)
            return _nearest(flat, self.codebook.detach(), self.chunk_size).reshape(z.shape[:-1])

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """
        The codes :math:`e_k` of the given indices, differentiable with respect to
        the codebook.

        :param torch.Tensor indices: integer tensor of shape ``(...)`` with
            values in ``{0, ..., K - 1}``.
        :return: tensor of shape ``(..., code_dim)``.
        """
        if indices.is_floating_point() or indices.is_complex() or indices.dtype == torch.bool:
            raise ValueError(f"indices must be an integer tensor, got dtype {indices.dtype}")
        outside = (indices < 0) | (indices >= self.codebook_size)
        if outside.any():
            raise ValueError(
                f"indices must lie in [0, {self.codebook_size - 1}], but {int(outside.sum())} are outside "
                f"(e.g. {int(indices[outside][0])})"
            )
        return self.codebook[indices]

    def forward(self, z_e: torch.Tensor) -> QuantizerOutput:
        """
        Quantize encoder outputs, and in training mode update the codebook's
        state (see the class docstring). The outputs and losses use the codes
        as they were before this forward's moving-average update and restarts.

        :param torch.Tensor z_e: encoder outputs of shape ``(batch, positions,
            code_dim)``, finite.
        :rtype: QuantizerOutput
        """
        self._check_input(z_e)
        if self.training and not self._known_initialized:
            if not self.initialized:
                self._initialize(z_e.detach())
            self._known_initialized = True
        indices = self.nearest(z_e)
        codes = self.codebook[indices]
        z_q = z_e + (codes - z_e).detach()
        commitment_loss = (z_e - codes.detach()).pow(2).sum((1, 2))
        if self.ema:
            codebook_loss = z_e.new_zeros(z_e.size(0))
        else:
            codebook_loss = (z_e.detach() - codes).pow(2).sum((1, 2))
        if self.training:
            flat = z_e.detach().reshape(-1, self.code_dim)
            self._update(flat, indices.reshape(-1), codes.detach().reshape(-1, self.code_dim))
        return QuantizerOutput(z_q, indices, codebook_loss, commitment_loss)

    def _check_input(self, z_e: torch.Tensor) -> None:
        if z_e.dim() != 3:
            raise ValueError(
                f"z_e has shape {tuple(z_e.shape)}, but the quantizer expects (batch, positions, code_dim="
                f"{self.code_dim})"
            )
        self._check_last_dim(z_e, "z_e")
        if z_e.numel() == 0:
            raise ValueError(f"z_e has shape {tuple(z_e.shape)}, with no encoder outputs to quantize")
        if is_validation_enabled():
            bad = ~torch.isfinite(z_e)
            if bad.any():
                raise ValueError(f"z_e contains {int(bad.sum())} NaN or infinite values")

    @torch.no_grad()
    def _initialize(self, z_e: torch.Tensor) -> None:
        world = current_world()
        points = world.gather_rows(z_e.reshape(-1, self.code_dim))  # the global batch, in rank order
        if world.is_main:
            centres, sizes = _kmeans(points, self.codebook_size, self.kmeans_iterations, self.chunk_size)
        else:
            centres = points.new_empty(self.codebook_size, self.code_dim)
            sizes = torch.empty(self.codebook_size, dtype=torch.long, device=points.device)
        world.broadcast(centres)
        world.broadcast(sizes)
        self.codebook.copy_(centres)
        if self.ema:
            self.cluster_size.copy_(sizes.clamp_min(1))
            self.code_sum.copy_(centres * self.cluster_size.unsqueeze(-1))
        self.usage.fill_(1.0)
        self.initialized.fill_(True)

    def _smoothed_cluster_size(self) -> torch.Tensor:
        r"""
        The Laplace-smoothed cluster sizes
        :math:`\tilde N_k = (N_k + \epsilon) / (\sum_j N_j + K \epsilon) \sum_j N_j`
        (only with ``ema=True``), shape ``(K,)``.
        """
        total = self.cluster_size.sum()
        return (self.cluster_size + self.epsilon) / (total + self.codebook_size * self.epsilon) * total

    @torch.no_grad()
    def _update(self, points: torch.Tensor, indices: torch.Tensor, codes: torch.Tensor) -> None:
        """
        The moving averages, the usage and the restarts after one training
        batch: ``points`` (N, D) are the encoder outputs, ``indices`` (N,)
        their nearest codes and ``codes`` (N, D) those codes as the forward
        used them.
        """
        world = current_world()
        # each code's count (and, with moving averages, the sum of its points) over the global batch: one all-reduce
        statistics = torch.zeros(self.codebook_size, 1 + self.code_dim * self.ema, dtype=points.dtype, device=points.device)
        statistics.index_add_(0, indices, torch.cat([torch.ones_like(points[:, :1]), points], 1) if self.ema else torch.ones_like(points[:, :1]))
        world.all_reduce_sum(statistics)
        counts = statistics[:, 0]
        if self.ema:
            self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
            self.code_sum.mul_(self.decay).add_(statistics[:, 1:], alpha=1 - self.decay)
            self.codebook.copy_(self.code_sum / self._smoothed_cluster_size().unsqueeze(-1))
        total = counts.sum()
        share = counts.to(self.usage.dtype) * (self.codebook_size / total)
        self.usage.mul_(self.usage_decay).add_(share, alpha=1 - self.usage_decay)
        if self.min_usage > 0:
            self._restart(self.usage < self.min_usage, points, codes, total, world)

    def _worst_rows(self, points: torch.Tensor, codes: torch.Tensor, world) -> torch.Tensor:
        """
        The candidates for restarts: rows of the global batch in decreasing
        order of quantization error (ties by position in the global batch),
        at least its ``K`` worst (all of them, when it has no more). Each
        rank contributes its ``K`` worst rows, padded with rows of error
        ``-inf`` and gathered in rank order: the ``K`` worst of the global
        batch are among them, and the padding sorts last.
        """
        errors = (points - codes).pow(2).sum(-1)
        worst = torch.argsort(errors, descending=True, stable=True)[: self.codebook_size]
        if not world.distributed:
            return points[worst]
        missing = self.codebook_size - len(worst)
        errors = torch.cat([errors[worst], errors.new_full((missing,), -float("inf"))])
        points = torch.cat([points[worst], points.new_zeros(missing, self.code_dim)])
        errors, points = torch.cat(world.all_gather(errors)), torch.cat(world.all_gather(points))
        return points[torch.argsort(errors, descending=True, stable=True)]

    def _restart(self, rare: torch.Tensor, points: torch.Tensor, codes: torch.Tensor, total: torch.Tensor, world) -> None:
        r"""
        Move the codes where the mask ``rare`` (K,) is true, in increasing
        order, onto the rows of the global batch (``total`` of them; this
        rank's are ``points``) with the largest quantization errors
        :math:`\lVert z_n - e_{k_n} \rVert^2`, in decreasing order (ties by
        row), cycling through the rows if there are more codes than rows;
        reset their statistics. Masked updates: nothing is read back to the
        host, and every rank makes the same changes.
        """
        candidates = self._worst_rows(points, codes, world)
        rank = (rare.cumsum(0) - 1).clamp_min(0)  # the j-th restarted code takes the j-th worst row
        rows = candidates[rank % total.long()]
        mask = rare.unsqueeze(-1)
        with torch.no_grad():
            self.codebook.copy_(torch.where(mask, rows.to(self.codebook.dtype), self.codebook))
        self.usage.copy_(torch.where(rare, torch.ones_like(self.usage), self.usage))
        if self.ema:
            self.cluster_size.copy_(torch.where(rare, torch.ones_like(self.cluster_size), self.cluster_size))
            self.code_sum.copy_(torch.where(mask, rows, self.code_sum))


def code_counts(indices: torch.Tensor, codebook_size: int) -> torch.Tensor:
    """
    How many times each code occurs in ``indices``.

    :param torch.Tensor indices: integer tensor of any shape with values in
        ``{0, ..., codebook_size - 1}``.
    :param int codebook_size: number of codes :math:`K`.
    :return: long tensor of shape ``(K,)``.
    """
    _check_integer("codebook_size", codebook_size, 1)
    flat = indices.reshape(-1)
    if flat.numel() and (flat.min() < 0 or flat.max() >= codebook_size):
        raise ValueError(
            f"indices must lie in [0, {codebook_size - 1}], got values from {int(flat.min())} to {int(flat.max())}"
        )
    return torch.bincount(flat, minlength=codebook_size)


def perplexity(counts: torch.Tensor) -> float:
    r"""
    The perplexity :math:`\exp(H(p))` of the code usage
    :math:`p = \mathrm{counts} / \sum \mathrm{counts}`, with
    :math:`H(p) = -\sum_k p_k \log p_k` and :math:`0 \log 0 = 0`: the number of
    codes a uniform usage with the same entropy would need, between 1 (one
    code used) and the number of codes used (equal usage).

    :param torch.Tensor counts: non-negative counts, e.g. from
        :func:`code_counts`, with a positive total.
    """
    counts = torch.as_tensor(counts, dtype=torch.float64).reshape(-1)
    if not torch.isfinite(counts).all() or (counts < 0).any() or not counts.sum() > 0:
        raise ValueError("counts must be finite and non-negative with a positive total")
    p = counts / counts.sum()
    return float(torch.exp(-torch.xlogy(p, p).sum()))


def codes_used(counts: torch.Tensor) -> int:
    """
    The number of codes with a nonzero count.

    :param torch.Tensor counts: counts of shape ``(K,)``.
    """
    return int(torch.count_nonzero(torch.as_tensor(counts)))
