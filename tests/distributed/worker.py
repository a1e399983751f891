"""
One process of a distributed test, as ``torchrun`` would start it:

    python -m tests.distributed.worker '{"scenario": "fit", ...}' OUT

with torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``; :func:`tests.distributed.launch.run`), or
without it for the one-process reference.

Scenarios:

- ``fit``: for each of ``runs``, :func:`pyprobvae.infer.fit` of a tiny
  ``model`` (with ``settings``) on 100 digits (and a test split of 40) for
  ``epochs`` at global batch ``batch_size``, checkpointed in OUT/``folder``
  (and continued from there with ``resume``); rank 0 writes
  OUT/``folder``/result.pt: the parameters, the history, how many code
  restarts there were and the world size. With ``"example_noise": false``
  the guides draw their noise from the rank's random stream, as in use. The Gaussian guides' noise is a fixed
  function of each example's mean (:func:`_noise_of_the_example`), so that
  one process and several see the same noise and the comparison measures the
  sharding, the loss scaling, the gradient averaging and the reductions
  alone; the VQ-VAE draws nothing after its k-means seeding, which rank 0
  does with the seed of one process.
- ``cli``: :func:`pyprobvae.cli.main` with ``argv``, and optionally a fault
  on one rank: ``{"rank": 1, "kind": "exit", "epoch": 2}`` (the process
  vanishes at the start of that epoch) or ``{"kind": "nan", "step": 5}``
  (that rank's losses at that global step are NaN). The exit status and
  stderr are the test's to read.
"""

import json
import os
import sys

import torch


def _noise_of_the_example(self, sample_shape=torch.Size()):
    """A reparameterized draw whose standard-normal part is sin(1000 * loc): the same for an example wherever it is computed."""
    shape = self._extended_shape(sample_shape)
    noise = torch.sin(1000 * self.loc.detach()).expand(shape)
    return self.loc + noise * self.scale


def _data():
    from pyprobvae.data import from_arrays, load_dataset

    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    return from_arrays(train.x[:100], train.y[:100], "digits"), from_arrays(test.x[:40], test.y[:40], "digits")


def _fit(task, out):
    from pyprobvae.distributed import init_from_environment, shut_down
    from pyprobvae.families.quantizer import VectorQuantizer

    drawn = torch.distributions.Normal.rsample
    world = init_from_environment("cpu")
    train, test = _data()
    restarts = []
    restart = VectorQuantizer._restart

    def counted(self, rare, *args):
        restarts.append(rare.sum())
        return restart(self, rare, *args)

    VectorQuantizer._restart = counted
    try:
        _fit_runs(task, out, world, train, test, restarts, drawn)
    finally:  # leave the group before exit: gloo's threads torn down by the interpreter may abort the process
        shut_down()


def _fit_runs(task, out, world, train, test, restarts, drawn):
    from pyprobvae.infer import TrainConfig, fit
    from tests.common import tiny_model

    for run in task["runs"]:
        folder = os.path.join(out, run["folder"])
        os.makedirs(folder, exist_ok=True)
        restarts.clear()
        torch.distributions.Normal.rsample = _noise_of_the_example if run.get("example_noise", True) else drawn
        model = tiny_model(run["model"], seed=0, **run.get("settings", {}))
        config = TrainConfig(epochs=run["epochs"], batch_size=run["batch_size"], seed=0, **run.get("training", {}))
        history = fit(model, train, test, config, os.path.join(folder, "checkpoint.pt"), run.get("resume", False), progress=False)
        if world.is_main:
            result = {"state": model.state_dict(), "history": history, "restarted": int(sum(restarts)), "world_size": world.size}
            torch.save(result, os.path.join(folder, "result.pt"))


def _cli(task, out):
    from pyprobvae import cli
    from pyprobvae.infer import loop, training

    fault = task.get("fault")
    if fault and int(os.environ.get("RANK", 0)) == fault["rank"]:
        if fault["kind"] == "exit":
            epoch = loop.Trainer._epoch

            def vanishing(self, number, *args):
                if number == fault["epoch"]:
                    os._exit(9)
                return epoch(self, number, *args)

            loop.Trainer._epoch = vanishing
        else:
            objective = training.ELBOObjective.__call__

            def poisoned(self, network, *args, step):
                losses, terms = objective(self, network, *args, step=step)
                if step == fault["step"]:
                    losses, terms = losses * float("nan"), tuple(t * float("nan") for t in terms)
                return losses, terms

            training.ELBOObjective.__call__ = poisoned
    return cli.main(task["argv"])


if __name__ == "__main__":
    task, out = json.loads(sys.argv[1]), sys.argv[2]
    status = {"fit": _fit, "cli": _cli}[task["scenario"]](task, out) or 0
    # Skip the interpreter's teardown once the work is done and the group left:
    # gloo's threads, destroyed with the process's static objects, at times
    # abort it ("terminate called without an active exception", status -6)
    # after every result is written; an exception above still exits 1.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
