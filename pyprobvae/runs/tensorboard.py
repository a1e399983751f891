"""
TensorBoard event files of a run: a view of training as it goes, for
``tensorboard --logdir runs/`` (``metrics.json`` stays the record).

An optional extra (``pip install pyprobvae[tensorboard]``): when TensorBoard
is installed, ``train`` writes the events into the run folder's
``tensorboard/`` and ``train-prior`` into ``tensorboard/prior/``, unless told
not to (:class:`TensorBoardConfig`); when it is not, they train as before,
without a word. The :class:`TensorBoardMonitor` is the
:class:`~pyprobvae.infer.loop.Monitor` of the training loop, on the main
process only. Every tag is plotted against the global step (counted from 1
over the whole run):

* ``step/TERM`` for each term of the objective (``log_likelihood``, ``kl``,
  ``penalty``, ``bound``; ``nll`` for a prior), ``step/loss``, ``step/lr``
  and ``step/grad_norm``, at each log window (``--log-every``): per-example
  means over the window, the learning rate and gradient norm of its last step;
* ``epoch/KEY`` for each number of the epoch's record in ``metrics.json``
  (``train_elbo``, ``test_elbo``, ``seconds``, ...) and of the model's
  :meth:`~pyprobvae.models.base.LatentVariableModel.tracked` numbers on the
  test split (``kl_per_dim/I``; ``codebook_perplexity``, ``codes_used``), at
  the epoch's last step;
* ``images/NAME``: the pictures of the run folder (``samples``,
  ``reconstructions`` with each row of inputs above its reconstructions,
  ``interpolation``, ...) for image data, every
  ``tensorboard_images_every`` epochs and at the last, drawn with the same
  seed each time;
* ``final/KEY`` for each number of the final evaluation (``metrics.json``
  without its histories), the run's settings as hyperparameters (the HParams
  dashboard, with the ``final/`` numbers as its metrics), and the settings
  as text (``config``).

A resumed run appends a new event file to the same folder, its steps
continuing from the checkpoint's; the file begins with a restart marker at
its first step, by which TensorBoard drops what a killed process wrote after
its last checkpoint. The pictures draw from their own random state, so
TensorBoard never changes a run's numbers.
"""

import contextlib
import json
from dataclasses import dataclass
from numbers import Real
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch

from .. import plots
from ..config import Config, setting
from ..files import check_writable
from ..infer import Monitor
from ..models import Exhibit

TENSORBOARD = "tensorboard"
"""The folder of the event files in a run folder."""
PRIOR_TENSORBOARD = "prior"
"""The folder of ``train-prior``'s event files, in :data:`TENSORBOARD`."""
IMAGES_PER_ROW = 8
"""Examples per row of an image grid whose exhibit does not say."""


@dataclass
class TensorBoardConfig(Config):
    """
    Whether and how ``train`` and ``train-prior`` write TensorBoard event
    files: options of the command, not settings of the run (not stored in
    ``config.json``; ``--resume`` may change them).
    """

    tensorboard: bool = True
    """Write TensorBoard event files into the run folder's tensorboard/ (train-prior: tensorboard/prior/) when TensorBoard is installed (pip install pyprobvae[tensorboard]); without it, or with --no-tensorboard, none are written."""
    tensorboard_images_every: int = setting(10, minimum=1, maximum=100_000)
    """Epochs between the sample and reconstruction images written to TensorBoard (image data; the last epoch has them too)."""


class TensorBoardMonitor(Monitor):
    """
    Writes a training run's events into ``folder`` (see the module's
    description); the writer opens when training starts.

    :param str folder: where the event files go.
    :param writer: :class:`torch.utils.tensorboard.SummaryWriter`.
    :param hparams: :func:`torch.utils.tensorboard.summary.hparams`.
    :param dict settings: the run's settings (as ``config.json`` holds them).
    :param int epochs: the last epoch of the run.
    :param int images_every: epochs between pictures.
    :param torch.device device: where the model computes (whose random state the pictures leave alone).
    :param tracked: returns the held-out numbers to follow each epoch.
    :param exhibits: returns the exhibits to picture.
    """

    def __init__(
        self, folder: str, writer: type, hparams: Callable, settings: dict, epochs: int, images_every: int,
        device: torch.device, tracked: Callable[[], dict], exhibits: Callable[[], List[Exhibit]],
    ) -> None:
        self.folder, self._writer_class, self._hparams = folder, writer, hparams
        self.settings, self.epochs, self.images_every, self.device = settings, epochs, images_every, device
        self._tracked, self._exhibits = tracked, exhibits
        self.writer: Any = None  # an instance of ``writer``, from start on
        self.step = 0

    def start(self, step: int) -> None:
        """Open the writer; its first event marks step ``step + 1`` as a restart, hiding older events from there on."""
        self.writer = self._writer_class(self.folder, purge_step=step + 1)
        self.step = step
        text = json.dumps(self.settings, indent=2)
        self.writer.add_text("config", "\n".join("    " + line for line in text.splitlines()), step)

    def window(self, step: int, numbers: Dict[str, float]) -> None:
        self.step = step
        for name, value in numbers.items():
            self.writer.add_scalar(f"step/{_tag(name)}", value, step)

    def epoch(self, step: int, record: dict) -> None:
        self.step = step
        self._scalars("epoch", {key: value for key, value in record.items() if key != "epoch"})
        with _own_random_state(self.device):
            self._scalars("epoch", self._tracked())
            if record["epoch"] % self.images_every == 0 or record["epoch"] == self.epochs:
                torch.manual_seed(0)  # the seed of the run folder's pictures
                for exhibit in self._exhibits():
                    self._picture(exhibit)
        self.writer.flush()  # each epoch on disk as it ends (before its checkpoint)

    def finish(self, evaluation: dict) -> None:
        """The final evaluation: ``final/`` scalars, and the settings as hyperparameters with those as metrics."""
        final = dict(_numbers(evaluation, "final"))
        for tag, value in final.items():
            self.writer.add_scalar(tag, value, self.step)
        for summary in self._hparams(dict(_hyperparameters(self.settings)), final):
            self.writer.file_writer.add_summary(summary, self.step)
        self.writer.flush()

    def close(self) -> None:
        """Write out and close the event file."""
        if self.writer is not None:
            self.writer.close()

    def _scalars(self, prefix: str, record: dict) -> None:
        for tag, value in _numbers(record, prefix):
            self.writer.add_scalar(tag, value, self.step)

    def _picture(self, exhibit: Exhibit) -> None:
        grid = _grid(exhibit)
        if grid is not None:
            self.writer.add_image(f"images/{exhibit.name}", grid, self.step, dataformats="HW" if grid.ndim == 2 else "HWC")


@contextlib.contextmanager
def tensorboard_monitor(
    folder: str, config: TensorBoardConfig, settings: dict, epochs: int, device: torch.device,
    tracked: Callable[[], dict] = dict, exhibits: Callable[[], List[Exhibit]] = list,
) -> Iterator[Optional[TensorBoardMonitor]]:
    """
    A :class:`TensorBoardMonitor` writing into ``folder``, closed on leaving
    the context; None when ``config`` says no or TensorBoard is not installed.
    The arguments are those of :class:`TensorBoardMonitor`.

    :raises OutputPathError: when no folder can be made at ``folder``.
    """
    if not config.tensorboard:
        yield None
        return
    try:
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams
    except ImportError:  # the extra is not installed: train without it
        yield None
        return
    check_writable(folder, directory=True)
    monitor = TensorBoardMonitor(
        folder, SummaryWriter, hparams, settings, epochs, config.tensorboard_images_every, device, tracked, exhibits,
    )
    try:
        yield monitor
    finally:
        monitor.close()


def _tag(name: str) -> str:
    """A term's name as a tag: ``log-likelihood`` -> ``log_likelihood``, ``KL`` -> ``kl``."""
    return name.lower().replace("-", "_").replace(" ", "_")


def _numbers(value: Any, tag: str) -> Iterator[Tuple[str, float]]:
    """
    ``(tag, number)`` for every number in ``value``: a dict's keys and a
    list's indices extend the tag (``a/b``, ``a/0``); text, None and flags
    are left out.
    """
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _numbers(item, f"{tag}/{key}" if tag else str(key))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from _numbers(item, f"{tag}/{index}")
    elif isinstance(value, Real) and not isinstance(value, bool):
        yield tag, float(value)


def _hyperparameters(settings: dict, prefix: str = "") -> Iterator[Tuple[str, object]]:
    """The settings flattened for the HParams dashboard: ``train/lr``; tuples as ``512,256``, None as ``none``, flags as text."""
    for key, value in settings.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _hyperparameters(value, f"{name}/")
        elif isinstance(value, (list, tuple)):
            yield name, ",".join(map(str, value))
        elif value is None or isinstance(value, bool):
            yield name, str(value).lower()
        else:
            yield name, value


def _grid(exhibit: Exhibit) -> Optional[np.ndarray]:
    """An exhibit of images as one grid (:func:`~pyprobvae.plots.image_grid`), or None for other data (codes, text)."""
    if exhibit.kind == "latent" or not torch.is_floating_point(exhibit.data[0]):
        return None
    if exhibit.kind == "reconstructions":  # whole rows of inputs, each above its reconstructions
        inputs, outputs = exhibit.data
        nrow = min(IMAGES_PER_ROW, len(inputs))
        rows = [t[: len(t) // nrow * nrow].unflatten(0, (-1, nrow)) for t in (inputs, outputs)]
        images = torch.stack(rows, 1).flatten(0, 2)
    elif exhibit.kind == "paths":
        (strips,) = exhibit.data
        images, nrow = strips.flatten(0, 1), strips.shape[1]
    else:
        (images,), nrow = exhibit.data, exhibit.nrow or IMAGES_PER_ROW
    if images.dim() != 4:
        return None
    return plots.image_grid(images, nrow)


@contextlib.contextmanager
def _own_random_state(device: torch.device) -> Iterator[None]:
    """Run the block with torch's random state (the CPU's and ``device``'s) restored afterwards: it draws nothing from the run's."""
    accelerator = device.type != "cpu"
    with torch.random.fork_rng(devices=[device] if accelerator else [], device_type=device.type if accelerator else "cuda"):
        yield
