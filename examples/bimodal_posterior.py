r"""
A posterior with two modes, fitted with Pyro's ``AutoNormal`` and with
pyprobvae's ``AutoMixtureNormal``.

The data only see the square of the parameter,

    theta ~ N(0, 1),    y_i | theta ~ N(theta^2, sigma^2),   i = 1..n,

so p(theta | y) is symmetric about 0: when the mean of y is well above
sigma / sqrt(n) it has two modes, roughly at +-sqrt(mean(y)), each holding
exactly half of the mass. The exact posterior is computed by quadrature on a grid (it
is one-dimensional), including the log evidence log p(y).

Fitting a single Gaussian by maximizing the ELBO, i.e. minimizing
KL(q || p), is mode-seeking: ``AutoNormal`` settles on one mode, and if it
fits that mode's half of the posterior well its KL to the posterior is close
to log 2, so its ELBO is about log p(y) - log 2 = log p(y) - 0.693. A mixture
of two Gaussians can put one component on each mode, and its ELBO can come
close to log p(y). Its locations and scales are learned reliably; its mixture
weights less so (see the notes of ``AutoMixtureNormal``): the mass it puts on
each side varies around 0.5 from seed to seed.

The script prints the mass each guide puts on theta < 0 and theta > 0
(from 20000 draws), the ELBOs (Monte Carlo, 20000 draws), and saves the exact
posterior density and both fitted densities to ``DIR/bimodal_posterior.png``.

    python examples/bimodal_posterior.py --out runs/bimodal --steps 1000
"""

import argparse
import math
import os

import pyro
import pyro.distributions as dist
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoNormal
from pyro.optim import ClippedAdam

from pyprobvae.autoguides import AutoMixtureNormal

NOISE = 1.0
NUM_DRAWS = 20000


def make_data(num_data=10, theta=1.0, seed=0):
    """
    :param int num_data: the number n of observations.
    :param float theta: the true parameter; y has mean ``theta ** 2``.
    :param int seed: seed of the noise.
    :return: the observations, shape ``(n,)``.
    """
    generator = torch.Generator().manual_seed(seed)
    return theta**2 + NOISE * torch.randn(num_data, generator=generator)


def model(y):
    """
    ``theta ~ N(0, 1)``, ``y_i ~ N(theta^2, NOISE^2)``.

    :param torch.Tensor y: the observations, shape ``(n,)``.
    """
    theta = pyro.sample("theta", dist.Normal(0.0, 1.0))
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Normal(theta**2, NOISE), obs=y)


def log_joint(theta, y):
    """log p(theta, y) at each point of ``theta`` (any shape)."""
    prior = dist.Normal(0.0, 1.0).log_prob(theta)
    return prior + dist.Normal(theta.unsqueeze(-1) ** 2, NOISE).log_prob(y).sum(-1)


def exact_posterior(y, grid):
    """
    The posterior density on ``grid`` and the log evidence, by the trapezoidal
    rule: ``log p(y) = log int p(theta, y) dtheta``.

    :param torch.Tensor y: the observations.
    :param torch.Tensor grid: equally spaced points covering the posterior.
    :return: ``(density, log_evidence)``.
    """
    log_p = log_joint(grid.double(), y.double())
    log_weights = torch.full_like(log_p, math.log(grid[1] - grid[0]))
    log_weights[[0, -1]] -= math.log(2)
    log_evidence = torch.logsumexp(log_p + log_weights, 0)
    return (log_p - log_evidence).exp().float(), log_evidence.item()


def fit(guide, y, steps, lr=0.02, final_lr=0.001):
    """
    Maximizes the ELBO with SVI, one particle per step, learning rate decaying
    geometrically from ``lr`` to ``final_lr``.
    """
    optim = ClippedAdam({"lr": lr, "lrd": (final_lr / lr) ** (1 / steps)})
    svi = SVI(model, guide, optim, Trace_ELBO())
    for _ in range(steps):
        svi.step(y)


def draws(guide, y, num_samples=NUM_DRAWS):
    """``num_samples`` draws of theta from the fitted guide."""
    with torch.no_grad(), pyro.plate("draws", num_samples, dim=-2):
        return guide(y)["theta"].reshape(-1)


def elbo(guide, y, num_samples=NUM_DRAWS):
    """A Monte Carlo estimate of the ELBO from ``num_samples`` draws."""
    loss = Trace_ELBO(num_particles=num_samples, vectorize_particles=True, max_plate_nesting=1)
    with torch.no_grad():
        return -loss.loss(model, guide, y)


def save_plot(path, grid, exact, densities):
    """Plots the exact posterior and the fitted densities to a PNG at ``path``."""
    figure = Figure(figsize=(7, 4))
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    ax.fill_between(grid, exact, color="0.85", label="exact posterior (quadrature)")
    for (name, density), style in zip(densities.items(), ["--", "-"]):
        ax.plot(grid, density, style, label=f"q of {name}")
    ax.set_xlabel(r"$\theta$")
    ax.set_ylabel("density")
    ax.set_title(r"$\theta \sim N(0, 1)$, $y_i \sim N(\theta^2, 1)$: posterior and fitted guides")
    ax.legend(loc="upper left", fontsize="small")
    figure.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.savefig(path, dpi=100)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--out", default="runs/bimodal")
    args = parser.parse_args(argv)

    torch.set_num_threads(1)  # tensors this small gain nothing from threads, only contention
    y = make_data()
    grid = torch.linspace(-3.0, 3.0, 1201)
    exact, log_evidence = exact_posterior(y, grid)
    mode = grid[exact.argmax()].abs().item()
    print(f"exact posterior (quadrature): modes at theta = +-{mode:.3f}, mass 0.5 on each side by symmetry, "
          f"log p(y) = {log_evidence:.3f}")

    guides = {"AutoNormal": AutoNormal(model), "AutoMixtureNormal(K=2)": AutoMixtureNormal(model, num_components=2)}
    densities = {}
    for name, guide in guides.items():
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        fit(guide, y, args.steps)
        theta = draws(guide, y)
        positive = (theta > 0).float().mean().item()
        value = elbo(guide, y)
        print(f"{name:23s} mass theta < 0: {1 - positive:.3f}  theta > 0: {positive:.3f}  "
              f"ELBO {value:.3f} (log p(y) - ELBO = {log_evidence - value:.3f})")
        with torch.no_grad():
            if isinstance(guide, AutoNormal):
                q = dist.Normal(guide.locs.theta, guide.scales.theta)
                densities[name] = q.log_prob(grid).exp()
            else:
                densities[name] = guide.get_posterior().log_prob(grid.unsqueeze(-1)).exp()
    print(f"a single mode costs about log 2 = {math.log(2):.3f} nats of ELBO")
    path = os.path.join(args.out, "bimodal_posterior.png")
    save_plot(path, grid.numpy(), exact.numpy(), {k: v.numpy() for k, v in densities.items()})
    print(f"plot: {path}")


if __name__ == "__main__":
    main()
