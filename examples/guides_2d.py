r"""
Every variational family of pyprobvae against exact two-dimensional
posteriors that are not Gaussian, in pictures and in nats.

Two toy problems share the prior z ~ N(0, I_2) and observe one number:

* the banana, x | z ~ N(z_1^2 + z_2, 0.2^2) at x = 2: the posterior is a
  thin ridge along the parabola z_2 = 2 - z_1^2 with two lobes at
  z_1 ~ +-1.2, curved and bimodal;
* two modes, x | z ~ N(z_1^2, 0.5^2) at x = 2: the posterior is z_1 near
  +-1.37 (mass 1/2 each) times z_2 ~ N(0, 1), two separated Gaussian-like
  modes that a diagonal Gaussian cannot cover both of.

The posterior density and the log evidence log p(x) come from quadrature on
a 2-d grid; since z_2 integrates out in closed form, x | z_1 ~ N(z_1^2,
noise^2 + coupling^2), the 1-d integral over z_1 is printed as a check.

The models are written for pyprobvae's per-example ELBO: the observation is
replicated B times inside a data plate and the guide reads a constant
context, features = ones(B, 1), so each plate element is an independent
particle z ~ q and ``elbo_terms`` returns B single-sample ELBO estimates of
one q. Each family is fitted by Adam on the ELBO (the mixture with K = 4 on
the stratified bound of ``stratified_estimate``). Then its ELBO
E_q[log p(x, z) - log q(z)] is estimated from many draws, and its gap to
log p(x), KL(q || p(z|x)), is printed in nats; for the stratified mixture,
the stratified bound it was trained on is printed too. That bound is tighter
than the ELBO of the same q and nearly ignores the mixture weights when the
components do not overlap, so the two can differ by a lot.

The figure shows, for each family, the regions of highest density of q that
hold 50%, 90% and 99% of its mass (filled) under the exact posterior's
(lines). Planar and radial flows have no inverse, so q cannot be evaluated
on a grid: their panels show a smoothed 2-d histogram of draws instead (the
panel title says so).

    python examples/guides_2d.py --out guides_2d.png              # about a minute
    python examples/guides_2d.py --steps 20 --out /tmp/quick.png  # seconds, with poor fits
"""

import argparse
import math
import os
import time
from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from pyprobvae.families import DiagonalNormal, DiagonalNormalMixture, NormalizingFlow
from pyprobvae.infer.elbo import elbo_terms, stratified_estimate

# The plotted box, [-3, 3]^2, and the box of the quadrature of log p(x), [-7, 7]^2,
# outside which either posterior has a negligible mass (the 1-d check agrees to 1e-4).
BOX = (-3.0, 3.0)
QUADRATURE_BOX = (-7.0, 7.0)
HDR_MASSES = (0.99, 0.9, 0.5)

# (label, constructor, training estimator, whether log_prob works at any point);
# every guide reads 1 feature and z has 2 dimensions.
GUIDES = [
    ("diagonal", lambda: DiagonalNormal(1, 2), "pathwise", True),
    ("mixture K=2, pathwise", lambda: DiagonalNormalMixture(1, 2, 2), "pathwise", True),
    ("mixture K=4, stratified", lambda: DiagonalNormalMixture(1, 2, 4), "stratified", True),
    ("planar flow, depth 8", lambda: NormalizingFlow(1, 2, "planar", 8), "pathwise", False),
    ("radial flow, depth 8", lambda: NormalizingFlow(1, 2, "radial", 8), "pathwise", False),
    ("iaf flow, depth 4", lambda: NormalizingFlow(1, 2, "iaf", 4), "pathwise", True),
    ("spline flow, depth 2", lambda: NormalizingFlow(1, 2, "spline", 2), "pathwise", True),
]


@dataclass
class Problem:
    """
    ``z ~ N(0, I_2)``, ``x | z ~ N(z_1^2 + coupling * z_2, noise^2)``, with
    ``x = observed``. Integrating z_2 out, ``x | z_1 ~ N(z_1^2, noise^2 +
    coupling^2)``, so log p(x) is also a 1-d integral (the check).
    """

    name: str
    observed: float
    noise: float
    coupling: float

    def model(self, x):
        """
        The Pyro model for the ``len(x)`` plate elements. Indexing with
        ``...`` lets the stratified estimator replay it with a leading
        dimension of one draw per component.
        """
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], 2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z[..., 0] ** 2 + self.coupling * z[..., 1], self.noise), obs=x)

    def log_joint(self, z):
        """log p(x = observed, z) at points z of shape ``(..., 2)``."""
        prior = dist.Normal(0.0, 1.0).log_prob(z).sum(-1)
        x = torch.tensor(self.observed, dtype=z.dtype)
        return prior + dist.Normal(z[..., 0] ** 2 + self.coupling * z[..., 1], self.noise).log_prob(x)

    def log_evidence_1d(self):
        """log p(x) = log int N(z_1; 0, 1) N(x; z_1^2, noise^2 + coupling^2) dz_1, by a fine Riemann sum."""
        z1 = torch.linspace(-10, 10, 200001, dtype=torch.float64)
        x = torch.tensor(self.observed, dtype=torch.float64)
        scale = math.sqrt(self.noise**2 + self.coupling**2)
        log_f = dist.Normal(0.0, 1.0).log_prob(z1) + dist.Normal(z1**2, scale).log_prob(x)
        return float(log_f.logsumexp(0) + math.log(z1[1] - z1[0]))

    def formula(self, latex=False):
        """The likelihood and the observation, as text or in matplotlib's TeX."""
        mean = "z_1^2" + {0: "", 1: " + z_2"}.get(self.coupling, f" + {self.coupling:g} z_2")
        if latex:
            return rf"$x \sim N({mean}, {self.noise:g}^2)$, $x = {self.observed:g}$"
        return f"x ~ N({mean}, {self.noise:g}^2), x = {self.observed:g}"


PROBLEMS = [
    # A thin curved ridge z_2 ~ 2 - z_1^2 with two lobes at z_1 ~ +-1.2.
    Problem("banana", observed=2.0, noise=0.2, coupling=1.0),
    # Two separated modes z_1 ~ +-1.37 (each of mass 1/2), z_2 ~ N(0, 1).
    Problem("two modes", observed=2.0, noise=0.5, coupling=0.0),
]


def make_guide(family):
    """The Pyro guide: q(z) = family(ones), the same distribution for every plate element."""

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", family(x.new_ones(x.shape[0], 1)))

    return guide


def grid_points(num, box=BOX):
    """A ``num`` x ``num`` grid on box x box: the axis, the points ``(num * num, 2)`` (z_1 slow) and the cell area."""
    axis = torch.linspace(*box, num, dtype=torch.float64)
    points = torch.cartesian_prod(axis, axis)
    return axis, points, float(axis[1] - axis[0]) ** 2


def exact_posterior(problem, num):
    """
    The posterior density on the plotting grid, shape ``(num, num)``, and
    log p(x) by a Riemann sum over a grid of spacing 0.02 on QUADRATURE_BOX.
    The integrand is smooth and the narrowest part of the banana's ridge is
    about 0.08 wide, four grid spacings, so the sum converges fast; it agrees
    with the 1-d integral to 1e-4 nats.
    """
    _, points, cell = grid_points(1 + round((QUADRATURE_BOX[1] - QUADRATURE_BOX[0]) / 0.02), QUADRATURE_BOX)
    log_evidence = float(problem.log_joint(points).logsumexp(0) + math.log(cell))
    _, points, _ = grid_points(num)
    return (problem.log_joint(points) - log_evidence).exp().reshape(num, num), log_evidence


def fit(problem, family, estimator, steps, particles, lr):
    """Adam on the mean over ``particles`` plate elements of the ELBO (or the stratified bound); cosine-decayed lr."""
    guide = make_guide(family)
    def bound(x):
        if estimator == "stratified":
            return stratified_estimate(problem.model, guide, x).bound
        return elbo_terms(problem.model, guide, x).elbo

    optimizer = torch.optim.Adam(family.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps, eta_min=lr / 20)
    x = torch.full((particles,), problem.observed)
    for _ in range(steps):
        loss = -bound(x).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    return guide


@torch.no_grad()
def evaluate(problem, guide, num_samples, estimator="pathwise"):
    """
    The ELBO E_q[log p(x, z) - log q(z)] (or, with ``"stratified"``, the
    stratified bound) from ``num_samples`` draws: mean and standard error.
    """
    x = torch.full((num_samples,), problem.observed)
    if estimator == "stratified":
        values = stratified_estimate(problem.model, guide, x).bound
    else:
        values = elbo_terms(problem.model, guide, x, analytic_kl=False).elbo
    values = values.double()
    return float(values.mean()), float(values.std() / math.sqrt(num_samples))


@torch.no_grad()
def density_on_grid(family, num, chunk=65536):
    """q's density at the grid points, by ``log_prob`` (which inverts the flow)."""
    _, points, _ = grid_points(num)
    points = points.float()
    parts = [family(torch.ones(len(p), 1)).log_prob(p) for p in points.split(chunk)]
    return torch.cat(parts).double().exp().reshape(num, num)


@torch.no_grad()
def density_from_samples(family, num, num_samples):
    """
    q's density at the grid points from a 2-d histogram of ``num_samples``
    draws on cells centred on the grid points, smoothed by a Gaussian kernel of
    one cell's width.
    """
    axis, _, cell = grid_points(num)
    z = family(torch.ones(num_samples, 1)).sample().double()
    width = float(axis[1] - axis[0])
    index = ((z - axis[0]) / width).round().long()
    inside = ((index >= 0) & (index < num)).all(-1)
    flat = index[inside, 0] * num + index[inside, 1]
    counts = torch.bincount(flat, minlength=num * num).reshape(1, 1, num, num).double()
    offsets = torch.arange(-3, 4, dtype=torch.float64)
    kernel = torch.exp(-0.5 * offsets**2)
    kernel = (kernel[:, None] * kernel[None, :]) / kernel.sum() ** 2
    smooth = F.conv2d(counts, kernel.reshape(1, 1, 7, 7), padding=3).reshape(num, num)
    return smooth / (num_samples * cell)


def hdr_levels(density, cell):
    """Density thresholds of the highest-density regions holding HDR_MASSES of the mass, increasing."""
    values = density.flatten().sort(descending=True).values
    mass = (values * cell).cumsum(0) / (values.sum() * cell)
    levels = [float(values[min(int(torch.searchsorted(mass, m)), len(values) - 1)]) for m in HDR_MASSES]
    return sorted(set(levels))


def plot(path, num, rows, columns=4):
    """
    For each problem, ``columns`` panels a row: the exact posterior, then each
    family's q (filled) under the exact posterior's regions (lines).

    :param rows: per problem, ``(problem, exact density, log p(x), [(title, density), ...])``.
    """
    axis, _, cell = grid_points(num)
    axis = axis.numpy()
    lines_per_problem = [math.ceil((1 + len(panels)) / columns) for *_, panels in rows]
    figure = Figure(figsize=(2.7 * columns, 3.2 * sum(lines_per_problem) + 0.4))
    FigureCanvasAgg(figure)
    axes = figure.subplots(sum(lines_per_problem), columns, sharex=True, sharey=True, squeeze=False)

    def fill(ax, density, colors):
        levels = hdr_levels(density, cell)
        ax.contourf(axis, axis, density.T.numpy(), levels=levels + [float(density.max()) * 1.01],
                    colors=colors[-len(levels):])

    first = 0
    for count, (problem, exact, log_evidence, panels) in zip(lines_per_problem, rows):
        cells = axes[first:first + count].flatten()
        first += count
        exact_levels = hdr_levels(exact, cell)
        fill(cells[0], exact, ["0.85", "0.6", "0.3"])
        cells[0].set_title(f"{problem.name}: exact posterior\n{problem.formula(latex=True)}\n"
                           f"log p(x) = {log_evidence:.3f}", fontsize=8)
        for ax, (title, density) in zip(cells[1:], panels):
            fill(ax, density, ["#c6dbef", "#6baed6", "#2171b5"])
            ax.contour(axis, axis, exact.T.numpy(), levels=exact_levels, colors="crimson", linewidths=0.6)
            ax.set_title(title, fontsize=8)
        for ax in cells[1 + len(panels):]:
            ax.set_visible(False)
    for ax in axes.flat:
        ax.set_aspect("equal")
        ax.set_xlim(*BOX)
        ax.set_ylim(*BOX)
        ax.tick_params(labelsize=7)
    for ax in axes[:, 0]:
        ax.set_ylabel("$z_2$", fontsize=8)
    for ax in axes[-1]:
        ax.set_xlabel("$z_1$", fontsize=8)
    figure.suptitle(
        "z ~ N(0, I): the 50/90/99% highest-density regions of q (blue) and of the exact posterior (red lines)\n"
        "ELBO and gap = log p(x) - ELBO = KL(q || p(z|x)), in nats",
        fontsize=9,
    )
    figure.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.savefig(path, dpi=80)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=800, help="Adam steps per family and problem (default 800)")
    parser.add_argument("--particles", type=int, default=128, help="draws of z per step (default 128)")
    parser.add_argument("--lr", type=float, default=0.01, help="initial learning rate (default 0.01)")
    parser.add_argument("--eval-samples", type=int, default=100000,
                        help="draws behind each ELBO estimate and each histogram (default 100000)")
    parser.add_argument("--grid", type=int, default=241, help="grid points per axis (default 241)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="guides_2d.png", help="the PNG to write (default guides_2d.png)")
    args = parser.parse_args(argv)

    torch.set_num_threads(1)  # tensors this small gain nothing from threads, only contention
    rows = []
    for problem in PROBLEMS:
        exact, log_evidence = exact_posterior(problem, args.grid)
        print(f"\n{problem.name}: z ~ N(0, I_2), {problem.formula()}")
        print(f"log p(x) = {log_evidence:.4f} nats (2-d grid quadrature; 1-d integral: {problem.log_evidence_1d():.4f})")
        print(f"| {'guide':25s} | {'ELBO':>8s} | {'s.e.':>6s} | {'gap':>7s} | {'fit s':>5s} |")
        print(f"|{'-' * 27}|{'-' * 9}:|{'-' * 7}:|{'-' * 8}:|{'-' * 6}:|")
        panels = []
        for label, build, estimator, invertible in GUIDES:
            pyro.set_rng_seed(args.seed)
            family = build()
            started = time.perf_counter()
            guide = fit(problem, family, estimator, args.steps, args.particles, args.lr)
            seconds = time.perf_counter() - started
            elbo, se = evaluate(problem, guide, args.eval_samples)
            gap = log_evidence - elbo
            print(f"| {label:25s} | {elbo:8.4f} | {se:6.4f} | {gap:7.4f} | {seconds:5.1f} |")
            title = f"{label}\nELBO {elbo:.3f}, gap {gap:.3f} nats"
            if estimator == "stratified":
                bound, bound_se = evaluate(problem, guide, args.eval_samples, estimator)
                print(f"| {'  its stratified bound':25s} | {bound:8.4f} | {bound_se:6.4f} | {log_evidence - bound:7.4f} |       |")
                title += f"\nstratified bound {bound:.3f}"
            if invertible:
                density = density_on_grid(family, args.grid)
            else:
                density = density_from_samples(family, args.grid, args.eval_samples)
                title += f"\n(no inverse: histogram of {args.eval_samples:,} draws)"
            panels.append((title, density))
        rows.append((problem, exact, log_evidence, panels))
    print("\nELBO and gap = log p(x) - ELBO = KL(q || p(z|x)) in nats; s.e. is the Monte Carlo standard error.")
    plot(args.out, args.grid, rows)
    print(f"figure: {args.out}")


if __name__ == "__main__":
    main()
