"""
The verbs of a run folder: ``train``, ``train_prior``, ``evaluate``,
``sample``, ``reconstruct``, ``interpolate``, ``traverse``, ``encode`` and
``write_pictures``. Each takes a :class:`~pyprobvae.runs.folder.Run` (or a
folder to train into) and the settings, computes through the model's
interface (:class:`~pyprobvae.models.base.LatentVariableModel`) and returns
tensors or numbers; the command line only parses and writes.
"""

import contextlib
import dataclasses
import math
import os
import shutil
from typing import ContextManager, Optional, Tuple

import pyro
import torch

from .. import plots
from ..config import Config
from ..data import Dataset, load_dataset
from ..data.text import VOCABULARY, decode_text, encode_text
from ..distributed import World, current_world
from ..evaluation import EvaluationConfig, load_or_train_classifier, real_word_scores, sample_scores, vocabulary_of
from ..files import check_writable, finish_replacement, is_temporary_file, remove_temporary_files, replace_directory, staging_directory
from ..infer import CheckpointError, NonFiniteLossError, PriorTrainConfig, TrainConfig, evaluation_data, fit, load_checkpoint
from ..infer import train_prior as fit_prior
from ..models import LatentVariableModel, ModelConfig, SamplingOptions, SamplingPlan, build_model
from ..priors import TransformerPrior, TransformerPriorConfig
from ..resources import check_fits, limit_allocations, resolve_device
from .data_defaults import prior_defaults, training_defaults
from .folder import CHECKPOINT, CLASSIFIER, CONFIG, CURVES, METRICS, DataConfig, Run, RunConfig, read_config, write_config
from .tensorboard import PRIOR_TENSORBOARD, TENSORBOARD, TensorBoardConfig, TensorBoardMonitor, tensorboard_monitor
from .writers import write_exhibits, write_json


def train(
    directory: str,
    data: DataConfig,
    model: ModelConfig,
    training: Optional[dict] = None,
    evaluation: Optional[EvaluationConfig] = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    tensorboard: Optional[TensorBoardConfig] = None,
) -> dict:
    """
    Train a model into the run folder ``directory``, evaluate it on the test
    split, and write the metrics and pictures (and TensorBoard's view of
    them, :mod:`~pyprobvae.runs.tensorboard`). A folder that already holds a
    run is continued (``resume``) or replaced (``overwrite``), never silently
    replaced: the replacement is trained in a folder beside it and swapped in
    only when it is complete, so that a crash leaves the old run whole.

    :param str directory: the run folder (created if needed).
    :param DataConfig data: the data set.
    :param ModelConfig model: the architecture; completed for the data
        (:meth:`~pyprobvae.models.base.ModelConfig.for_data`).
    :param dict training: settings of :class:`~pyprobvae.infer.TrainConfig`;
        those it lacks take the data's defaults
        (:func:`~pyprobvae.runs.data_defaults.training_defaults`), then the
        config's.
    :param EvaluationConfig evaluation: how to evaluate the result.
    :param bool resume: continue the run's checkpoint (only ``epochs`` may
        differ from the saved settings).
    :param bool overwrite: replace a run that ``directory`` already holds.
    :param bool progress: show progress.
    :param tensorboard: whether and how to write TensorBoard event files
        (default: :class:`~pyprobvae.runs.tensorboard.TensorBoardConfig`'s).
    :raises NonFiniteLossError: when training diverges or a reported number
        is not finite (a replaced run is then kept).
    :return: the metrics written to ``metrics.json``.
    """
    world = current_world()
    with world.together():  # rank 0 alone reads and prepares the folder; an error on any rank stops them all
        if world.is_main:
            check_writable(directory, directory=True)
            finish_replacement(directory)
        data = data.absolute()
        train_split, test_split = (load_dataset(data.dataset, split, data.data_dir, data.seq_len) for split in ("train", "test"))
        model = model.for_data(train_split)
        assert model.likelihood is not None, "for_data sets the likelihood"
        training = {**training_defaults(model.likelihood, train_split), **(training or {})}
        config = RunConfig(data, model, TrainConfig(**training), evaluation or EvaluationConfig())
        world.check_batch_size(config.train.batch_size)
        target, existed = directory, False  # the other ranks train into directory itself
        if world.is_main:
            target, existed = _prepare_run_folder(directory, config, resume, overwrite)
    try:
        metrics = _train_into(target, config, train_split, test_split, resume, progress, world,
                              tensorboard or TensorBoardConfig())
    except BaseException:
        if world.is_main:
            _undo_unfinished_run(directory, target, resume, existed)
        raise
    if world.is_main and target != directory:
        replace_directory(target, directory)
    return metrics


def _prepare_run_folder(directory: str, config: RunConfig, resume: bool, overwrite: bool) -> Tuple[str, bool]:
    """
    The folder a run trains into (``directory`` itself, or one beside it that
    replaces it when complete), checked and tidied, and whether
    ``directory`` existed before.
    """
    existed = os.path.isdir(directory)
    if resume:
        _check_resumable(directory, config)
        _check_run_outputs(directory)
        remove_temporary_files(directory)
        return directory, existed
    return _new_run_folder(directory, overwrite), existed


def _undo_unfinished_run(directory: str, target: str, resume: bool, existed: bool) -> None:
    """After a failed run: a replacement is removed (the run it was to replace stays); a new run without a checkpoint is undone."""
    if target != directory:
        shutil.rmtree(target, ignore_errors=True)
    elif not resume and not os.path.exists(os.path.join(target, CHECKPOINT)):
        _remove_unstarted_run(target, existed)  # nothing to resume: leave the folder as it was


def _train_into(
    target: str, config: RunConfig, train_split: Dataset, test_split: Dataset, resume: bool, progress: bool, world: World,
    tensorboard: TensorBoardConfig,
) -> dict:
    """Train (every rank), then evaluate and write the run's files (rank 0; the others return an empty dict)."""
    assert config.model is not None, "train gives the run its model"
    pyro.set_rng_seed(config.train.seed)
    with limit_allocations(PARAMETER_SHARE, f"the model ({_sizes(config.model)})"):
        built = build_model(config.model)
    if not resume and world.is_main:
        write_config(target, config)
    with _training_monitor(target, config, built, test_split, tensorboard, world) as monitor:
        history = fit(built, train_split, test_split, config.train, os.path.join(target, CHECKPOINT), resume, progress, monitor)
        if not world.is_main:
            return {}
        write_config(target, config)
        run = Run(target, config.train.device)
        final = evaluate(run)
        _check_finite(final)
        metrics = {**final, "history": history}
        write_json(metrics, run.path(METRICS))
        write_pictures(run)
        if monitor is not None:
            monitor.finish(final)
    return metrics


def _training_monitor(
    target: str, config: RunConfig, model: LatentVariableModel, test_split: Dataset, tensorboard: TensorBoardConfig, world: World,
) -> ContextManager[Optional[TensorBoardMonitor]]:
    """TensorBoard for ``train`` on the main process: the model's tracked numbers and exhibits on the test split each epoch."""
    if not (tensorboard.tensorboard and world.is_main):
        return contextlib.nullcontext()
    device = resolve_device(config.train.device)
    test = test_split.to(device)
    x, y = evaluation_data(test, config.train.binarize), model.labels(test)
    return tensorboard_monitor(
        os.path.join(target, TENSORBOARD), tensorboard, config.to_dict(), config.train.epochs, device,
        tracked=lambda: model.tracked(x, y), exhibits=lambda: model.exhibits(x, y, test.y),
    )


PARAMETER_SHARE = 0.25
"""The share of the available memory a model's weights may take: training adds their gradients and two Adam moments."""


def _sizes(config: Config) -> str:
    """The size settings of ``config`` as options, e.g. ``--hidden 512,512 --latent-dim 8``: what makes it big."""
    shown = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if not f.metadata.get("derived") and f.metadata.get("maximum") is not None:
            shown.append(f"--{f.name.replace('_', '-')} {','.join(map(str, value)) if isinstance(value, tuple) else value}")
    return " ".join(shown)


def _new_run_folder(directory: str, overwrite: bool) -> str:
    """
    Where a new run trains: ``directory`` itself when it holds nothing (or
    only the temporary files of a run killed in its first write), else (with
    ``overwrite``) a folder beside it.
    """
    if not os.path.exists(directory):
        return directory
    if all(is_temporary_file(name) for name in os.listdir(directory)):
        remove_temporary_files(directory)
        return directory
    if not overwrite:
        raise ValueError(
            f"run folder {directory} already holds a run: continue it with --resume, or replace it with --overwrite"
        )
    staging = staging_directory(directory)
    if os.path.exists(staging):  # left by a replacement that did not finish
        shutil.rmtree(staging)
    return staging


def _remove_unstarted_run(directory: str, existed: bool) -> None:
    """Undo a new run that failed before its first checkpoint: remove what it wrote (the folder too, if it made it)."""
    if not existed:
        shutil.rmtree(directory, ignore_errors=True)
        return
    for name in os.listdir(directory):
        path = os.path.join(directory, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        else:
            os.remove(path)


def _check_run_outputs(directory: str) -> None:
    """
    Before a verb changes a run, check that it can finish: it can write the
    run's files (none is a directory, say), and the cached classifier that
    its evaluation reads, if any, is intact.
    """
    for name in (CHECKPOINT, CONFIG, METRICS, CURVES):
        check_writable(os.path.join(directory, name))
    if os.path.lexists(os.path.join(directory, CLASSIFIER)):
        load_checkpoint(os.path.join(directory, CLASSIFIER))


def _check_finite(metrics: dict, where: str = "") -> None:
    """Refuse to finish a run whose evaluation has a non-finite number."""
    for key, value in metrics.items():
        if isinstance(value, dict):
            _check_finite(value, f"{where}{key}.")
        elif isinstance(value, float) and not math.isfinite(value):
            raise NonFiniteLossError(f"the evaluation's {where}{key} is {value}; the run is not finished")


def _check_resumable(directory: str, config: RunConfig) -> None:
    """Refuse to resume with other data, another model, or a model that has a prior over its codes."""
    if not os.path.isdir(directory):
        raise CheckpointError(f"nothing to resume: run folder {directory} does not exist")
    saved = read_config(directory)
    if saved.data != config.data:
        raise CheckpointError(f"cannot resume {directory} on other data: it was trained on {saved.data.dataset}")
    if getattr(saved.model, "code_prior", None) is not None:
        raise CheckpointError(
            f"{directory} has a trained prior over its codes; resuming stage 1 would change the codes it models: "
            "train a new run instead"
        )
    if saved.model != config.model:
        raise CheckpointError(f"cannot resume {directory} with another architecture: {saved.model} != {config.model}")


def train_prior(
    run: Run, prior: Optional[dict] = None, training: Optional[dict] = None, progress: bool = True,
    tensorboard: Optional[TensorBoardConfig] = None,
) -> dict:
    """
    Stage 2 of a model with discrete codes: fit a learned prior over the
    codes of the training split (raster order), keeping the parameters of
    the epoch with the lowest NLL on a held-out share of the training codes
    (``config.validation_share``, chosen by ``config.seed``); store it in the
    run's checkpoint (atomically), then evaluate again and redraw the
    pictures with it. TensorBoard's view goes to the run's
    ``tensorboard/prior/`` (:mod:`~pyprobvae.runs.tensorboard`; a second
    prior's events hide the first's).

    :param Run run: a run whose model has discrete codes.
    :param dict prior: settings of the prior's architecture,
        :class:`~pyprobvae.priors.TransformerPriorConfig`, and
    :param dict training: settings of :class:`~pyprobvae.infer.PriorTrainConfig`;
        those of :class:`~pyprobvae.infer.PriorTrainConfig`; the settings
        either lacks take the data's defaults
        (:func:`~pyprobvae.runs.data_defaults.prior_defaults`; the device:
        the run's), then the configs'.
    :param bool progress: show progress.
    :param tensorboard: whether and how to write TensorBoard event files
        (default: :class:`~pyprobvae.runs.tensorboard.TensorBoardConfig`'s).
    :return: the new metrics (also written to ``metrics.json``), with
        ``prior_history``.
    """
    model_config = run.config.model
    assert model_config is not None and model_config.likelihood is not None, "a trained run's config is complete"
    architecture, loop = prior_defaults(model_config.likelihood)
    prior_config = TransformerPriorConfig(**{**architecture, **(prior or {})})
    config = PriorTrainConfig(**{**loop, "device": str(run.device), **(training or {})})
    world = current_world()
    with world.together():
        world.check_batch_size(config.batch_size)
        if world.is_main:
            _check_run_outputs(run.directory)
    codes = run.model.prior_training_codes(run.model_data("train"))
    test_codes = run.model.prior_training_codes(run.model_data("test"))
    order = torch.randperm(len(codes), generator=torch.Generator().manual_seed(config.seed)).to(codes.device)
    held_out = max(1, int(config.validation_share * len(codes)))
    if held_out >= len(codes):
        raise ValueError(f"the training split has {len(codes)} examples: too few to hold some out for the prior")
    pyro.set_rng_seed(config.seed)
    with limit_allocations(PARAMETER_SHARE, f"the prior ({_sizes(prior_config)})", run.device):
        module = run.model.attach_code_prior(prior_config)
    with _prior_monitor(run, module, config, tensorboard or TensorBoardConfig(), world) as monitor:
        history = fit_prior(module, codes[order[held_out:]], test_codes, config, progress, validation_codes=codes[order[:held_out]],
                            monitor=monitor)
        if not world.is_main:
            return {}
        run.prior_history = history
        run.save_model(prior_history=history)
        final = evaluate(run)
        metrics = {**final, "history": run.history, "prior_history": history}
        write_json(metrics, run.path(METRICS))
        write_pictures(run)
        if monitor is not None:
            monitor.finish(final)
    return metrics


def _prior_monitor(
    run: Run, prior: TransformerPrior, config: PriorTrainConfig, tensorboard: TensorBoardConfig, world: World,
) -> ContextManager[Optional[TensorBoardMonitor]]:
    """TensorBoard for ``train-prior`` on the main process: samples drawn from the prior as it trains."""
    if not (tensorboard.tensorboard and world.is_main):
        return contextlib.nullcontext()
    x, y = run.model_data("test"), run.model_labels("test")
    return tensorboard_monitor(
        os.path.join(run.directory, TENSORBOARD, PRIOR_TENSORBOARD), tensorboard,
        {"prior": prior.config.to_dict(), "train": config.to_dict()},
        config.epochs, run.device, exhibits=lambda: [shown for shown in run.model.exhibits(x, y, None) if shown.kind == "images"],
    )


def evaluate(run: Run, config: Optional[EvaluationConfig] = None) -> dict:
    """
    The model's held-out numbers
    (:meth:`~pyprobvae.models.base.LatentVariableModel.evaluate`) with
    torch's random state seeded so that the Monte Carlo estimates repeat,
    and, for labelled image data, ``sample_scores``: the
    :func:`~pyprobvae.evaluation.sample_scores` of the model's
    :meth:`~pyprobvae.models.base.LatentVariableModel.scored_samples` against
    the test images, judged by a classifier trained on the training split
    and cached in the run folder (``classifier.pt``); for text,
    ``sample_scores`` holds the share of real words in ``scored_texts``
    samples (:func:`~pyprobvae.evaluation.real_word_scores`, against the
    words of the training split). The result depends on the run and the
    seed only.
    """
    config = config or run.config.evaluation
    torch.manual_seed(config.seed)
    metrics = run.model.evaluate(
        run.model_data("test"), run.model_labels("test"), iwae_samples=config.iwae_samples, analytic_kl=run.config.train.analytic_kl
    )
    train_split = run.dataset("train")
    if train_split.y is not None and torch.is_floating_point(train_split.x):
        classifier = load_or_train_classifier(run.path(CLASSIFIER), train_split)
        real = run.dataset("test").x
        metrics["sample_scores"] = {}
        for name, plan in run.model.scored_samples(config.scored_samples, lambda: train_split.x).items():
            torch.manual_seed(config.seed)
            samples = run.model.sample(plan.num_samples, **plan.given)
            metrics["sample_scores"][name] = sample_scores(classifier, samples, real, plan.given.get("y"))
    elif train_split.vocabulary is not None:
        known = vocabulary_of(decode_text(train_split.x, train_split.vocabulary))
        metrics["sample_scores"] = {}
        for name, plan in run.model.scored_samples(config.scored_texts, lambda: train_split.x).items():
            torch.manual_seed(config.seed)
            texts = decode_text(run.model.sample(plan.num_samples, **plan.given), train_split.vocabulary)
            metrics["sample_scores"][name] = real_word_scores(texts, known)
    return metrics


def sampling_plan(
    run: Run, num_samples: int, label: Optional[int] = None, codes: Optional[str] = None, top_k: Optional[int] = None,
    top_p: Optional[float] = None,
) -> SamplingPlan:
    """The model's :meth:`~pyprobvae.models.base.LatentVariableModel.sampling_plan` for a user's options."""
    options = SamplingOptions(label=label, codes=codes, top_k=top_k, top_p=top_p)
    return run.model.sampling_plan(num_samples, options, training_data=lambda: run.dataset("train").x)


def _check_output_size(run: Run, count: int, what: str) -> None:
    """Refuse to decode ``count`` examples at once when they cannot fit (with room for the decoder's activations)."""
    per_example = math.prod(run.model.config.data_shape) * 4 * OUTPUT_MEMORY_FACTOR
    check_fits(count * per_example, f"{what} ({count} examples of shape {tuple(run.model.config.data_shape)})", run.device)


OUTPUT_MEMORY_FACTOR = 16
"""Bytes of working memory a decoded example may need, in multiples of its own float32 size (a rough upper bound for the decoders here)."""


def sample(run: Run, plan: SamplingPlan, temperature: float = 1.0, seed: int = 0) -> torch.Tensor:
    """Decoded draws from the model's prior as ``plan`` says, at a temperature, seeded."""
    _check_output_size(run, plan.num_samples, "sampling")
    torch.manual_seed(seed)
    return run.model.sample(plan.num_samples, temperature=temperature, **plan.given)


def complete(run: Run, num_examples: int, plan: SamplingPlan, temperature: float = 1.0, seed: int = 0) -> Tuple[torch.Tensor, torch.Tensor]:
    """
    The first ``num_examples`` test images, and each completed from the top
    half of its codes by the prior (:meth:`~pyprobvae.models.VQVAE.complete`),
    with the sampling options of ``plan``, seeded.
    """
    _check_output_size(run, 2 * num_examples, "completion")
    x = run.model_data("test")[:num_examples]
    torch.manual_seed(seed)
    return x, run.model.complete(x, run.model.prefix_positions(), temperature=temperature, **plan.given)


def continue_prompt(run: Run, prompt: str, plan: SamplingPlan, temperature: float = 1.0, seed: int = 0) -> torch.Tensor:
    """
    ``plan.num_samples`` continuations of ``prompt`` by a text run's prior:
    the prompt, padded with spaces to a sequence, is encoded, the codes that
    cover it kept, and the rest drawn (:meth:`~pyprobvae.models.VQVAE.complete`).

    :raises ValueError: for a prompt too short to cover one code or too long
        for the run's sequences.
    """
    vocabulary = run.vocabulary
    ids = encode_text(prompt, vocabulary or VOCABULARY)
    covered = run.model.prefix_positions(len(ids))  # refuses image runs first
    _check_output_size(run, plan.num_samples, "continuation")
    (length,) = run.model.data_shape
    assert vocabulary is not None, "a run that takes a prompt holds text, which has a vocabulary"
    x = torch.full((plan.num_samples, length), vocabulary.index(" "), dtype=torch.long, device=run.device)
    x[:, : len(ids)] = ids.to(run.device)
    torch.manual_seed(seed)
    return run.model.complete(x, covered, temperature=temperature, **plan.given)


def reconstruct(run: Run, num_examples: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """The first ``num_examples`` test examples and their reconstructions."""
    x, y = run.model_data("test")[:num_examples], run.model_labels("test")
    return x, run.model.reconstruct(x, None if y is None else y[:num_examples])


def interpolate(run: Run, pairs: int = 8, steps: int = 10, method: str = "linear", seed: int = 0) -> torch.Tensor:
    """Decoded paths between the codes of ``pairs`` random pairs of test examples (chosen by ``seed``)."""
    x, y = run.model_data("test"), run.model_labels("test")
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[: 2 * pairs].to(x.device)
    if len(order) < 2 * pairs:
        raise ValueError(f"--pairs {pairs} needs {2 * pairs} test examples; the test set has {len(x)}")
    _check_output_size(run, pairs * steps, "interpolating")
    start, end = order[:pairs], order[pairs:]
    labels = (None, None) if y is None else (y[start], y[end])
    return run.model.interpolate(x[start], x[end], steps, method, *labels)


def interpolate_classes(run: Run, classes: Tuple[int, int], paths: int = 8, steps: int = 10, seed: int = 0) -> torch.Tensor:
    """Decoded paths from one class to another with the style held, one row per style."""
    _check_output_size(run, paths * steps, "interpolating")
    torch.manual_seed(seed)
    return run.model.interpolate_classes(*classes, paths, steps)


def traverse(run: Run, index: int = 0, num_dims: Optional[int] = None, steps: int = 9, span: float = 3.0) -> torch.Tensor:
    """
    Latent traversals of test example ``index``: each dimension swept over
    ``linspace(-span, span, steps)`` with the others held at its code, in
    the model's :meth:`~pyprobvae.models.base.LatentVariableModel.traversal_order`,
    ``num_dims`` of them (all by default).

    :return: images of shape ``(num_dims, steps, *data_shape)``.
    """
    x, y = run.model_data("test"), run.model_labels("test")
    dims = run.model.traversal_order(x, y)[:num_dims]
    if not 0 <= index < len(x):
        raise ValueError(f"test example {index} does not exist; the test set has {len(x)}")
    _check_output_size(run, len(dims) * steps, "traversing")
    values = torch.linspace(-span, span, steps, device=x.device)
    return run.model.traverse(x[index : index + 1], dims, values, None if y is None else y[index : index + 1])


def encode(run: Run, split: str = "test") -> torch.Tensor:
    """The codes of a split: posterior means ``(N, latent_dim)``, or code indices ``(N, positions)``."""
    return run.model.encode(run.model_data(split), run.model_labels(split))


def write_pictures(run: Run) -> None:
    """The training curves and the model's :meth:`~pyprobvae.models.base.LatentVariableModel.exhibits` on the test data."""
    plots.save_training_curves(run.history, run.path(CURVES))
    torch.manual_seed(0)
    exhibits = run.model.exhibits(run.model_data("test"), run.model_labels("test"), run.dataset("test").y)
    write_exhibits(exhibits, run.directory, run.vocabulary)
