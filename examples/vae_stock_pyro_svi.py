"""
pyprobvae's VAE is an ordinary Pyro model/guide pair: this trains it with
Pyro's own ``SVI`` and ``Trace_ELBO``, and shows that Pyro's loss and
pyprobvae's per-example ELBO measure the same thing.

``Trace_ELBO().loss`` is the negative ELBO *summed* over the batch; divided by
the batch size it is the negative ELBO in nats per example, the number
pyprobvae reports.

    python examples/vae_stock_pyro_svi.py --steps 2000
"""

import argparse

import pyro
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam

import pyprobvae as ppv
from pyprobvae.infer import dataset_elbo


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args(argv)

    pyro.set_rng_seed(0)
    pyro.clear_param_store()
    train, test = ppv.load_dataset("digits", "train"), ppv.load_dataset("digits", "test")
    vae = ppv.build_vae(train.data_shape, latent_dim=8, hidden=[256],
                        likelihood="categorical", num_levels=train.num_levels)
    svi = SVI(vae.model, vae.guide, Adam({"lr": 1e-3}), Trace_ELBO())
    for step in range(1, args.steps + 1):
        batch = train.x[torch.randint(len(train), (args.batch_size,))]
        loss = svi.step(batch) / args.batch_size
        if step % 500 == 0 or step == args.steps:
            print(f"step {step:5d}  -ELBO {loss:8.2f} nats per example (Pyro Trace_ELBO / batch size)")

    with torch.no_grad():
        pyro_value = -Trace_ELBO(num_particles=20, vectorize_particles=False).loss(vae.model, vae.guide, test.x) / len(test)
        ours = dataset_elbo(vae, test.x, analytic_kl=False).elbo.mean().item()
    print(f"test ELBO: Pyro {pyro_value:.2f}, pyprobvae {ours:.2f} nats per example (Monte Carlo estimates of one quantity)")


if __name__ == "__main__":
    main()
