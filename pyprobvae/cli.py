"""
The ``pyprobvae`` command: ``train``, ``train-prior``, ``evaluate``,
``sample``, ``reconstruct``, ``interpolate``, ``traverse`` and ``encode``.

The command only parses and formats: the settings' options are generated
from the config dataclasses (their defaults and their attribute docstrings,
which become the help text), the verbs of :mod:`pyprobvae.runs.verbs`
compute, and :mod:`pyprobvae.runs.writers` writes. A model registered in
:mod:`pyprobvae.models.registry` gets its options here without any change to
this module. Errors in what the user asked for are one line on stderr and
exit status 2.

Output: stdout carries a verb's result alone (a JSON object, or the path of
the file written), so that ``pyprobvae evaluate RUN | jq .test_nll`` and
``out=$(pyprobvae sample ...)`` work; progress, notes, warnings and anything
the computation prints go to stderr, where ``--quiet`` silences all but the
errors (:func:`_output_streams`).
"""

import argparse
import contextlib
import dataclasses
import inspect
import json
import os
import sys
import time
import traceback
import typing
from typing import Any, Callable, Collection, Dict, Iterator, Mapping, NoReturn, Optional, Sequence, Set, Tuple, Type

import torch

from . import __version__
from .config import SEED, Config, ConfigError, field_docs, field_types, limits, optional_inner, value_problem
from .data import DataError
from .distributed import PeerError, World, current_world, init_from_environment, launched_size, lost_peer, shut_down
from .evaluation import EvaluationConfig
from .files import OutputPathError, finish_replacement
from .infer import CheckpointError, NonFiniteLossError, PriorTrainConfig, TrainConfig
from .interpolation import INTERPOLATIONS
from .models import MODELS, ModelConfig
from .models.ae import CODE_SOURCES
from .models.registry import DEFAULT_MODEL, inapplicable_reason, model_class, setting_owners
from .priors import TransformerPriorConfig
from .resources import ResourceError
from .runs import verbs
from .runs.data_defaults import TEXT_PRIOR, TEXT_PRIOR_TRAINING, TEXT_TRAINING
from .runs.folder import CONFIG, DataConfig, Run, read_config
from .runs.tensorboard import TensorBoardConfig
from .runs.writers import SUFFIXES, check_output, write_array, write_examples, write_paths, write_reconstructions


class UsageError(Exception):
    """A mistake in the command line: reported in one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


# ------------------------------------------------------------ options from configs


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _parser_of(annotation: Any, metadata: Mapping[str, Any]) -> Callable[[str], Any]:
    """
    The argparse ``type`` of a value: text -> value of the annotation's type,
    checked against its :func:`~pyprobvae.config.limits` by
    :func:`~pyprobvae.config.value_problem`, as the config checks a setting.
    """
    inner, optional = optional_inner(annotation)

    def number(text: str, kind: Type[float]) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None
        if kind is float and value != value:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}")
        return value

    def parse(text: str) -> Any:
        if optional and text.lower() == "none":
            return None
        value: Any
        if typing.get_origin(inner) is tuple:
            try:
                value = tuple(int(part) for part in text.split(","))
            except ValueError:
                raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 400 or 512,256, got {text!r}") from None
        elif inner in (int, float):
            value = number(text, inner)
        else:
            value = text
        problem = value_problem(value, metadata)
        if problem:
            raise argparse.ArgumentTypeError(problem + (" (or none)" if optional and problem.startswith("unknown") else ""))
        return value

    return parse


def _show_default(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return "none" if value is None else str(value)


def _add_config_options(
    parser: argparse._ActionsContainer, configs: Sequence[type], *, skip: Collection[str] = (),
    only: Optional[Collection[str]] = None, seen: Optional[Set[str]] = None, text_defaults: Optional[Mapping[str, Any]] = None,
) -> Set[str]:
    """
    One option per setting of the ``configs`` dataclasses (a setting shared
    by several is added once), with ``default=SUPPRESS`` so that only what the
    user typed reaches the verbs and every default stays in its config.
    ``text_defaults`` are the settings text runs default to otherwise
    (:mod:`~pyprobvae.runs.data_defaults`), shown in the help.
    """
    seen = set() if seen is None else seen
    for cls in configs:
        docs, types = field_docs(cls), field_types(cls)
        for f in dataclasses.fields(cls):
            if f.metadata.get("derived") or f.name in skip or f.name in seen or (only is not None and f.name not in only):
                continue
            seen.add(f.name)
            shown = _show_default(f.default)
            if text_defaults and f.name in text_defaults:
                shown += f"; for text: {_show_default(text_defaults[f.name])}"
            help_text = f"{docs.get(f.name, '')} (default: {shown})".strip()
            owners = [name for name, model in MODELS.items() if issubclass(cls, ModelConfig) and f.name in _names(model.Config)]
            if owners and len(owners) < len(MODELS):
                help_text += f" [--model {', '.join(owners)}]"
            flags = [_flag(f.name), *f.metadata.get("aliases", ())]
            if optional_inner(types[f.name])[0] is bool:
                parser.add_argument(*flags, dest=f.name, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text)
            else:
                choices = f.metadata.get("choices")
                optional = optional_inner(types[f.name])[1]
                metavar = f.name.upper() if choices is None else "{" + ",".join(map(str, choices + (("none",) if optional else ()))) + "}"
                parser.add_argument(*flags, dest=f.name, type=_parser_of(types[f.name], f.metadata), default=argparse.SUPPRESS,
                                    metavar=metavar, help=help_text)
    return seen


def _names(cls: Type[Config]) -> Set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def _default(function: Callable[..., Any], name: str) -> Any:
    """A verb's default for a parameter, for the help text (the verb holds the default)."""
    return inspect.signature(function).parameters[name].default


def _option(
    parser: argparse._ActionsContainer, flag: str, help_text: str, kind: Any = str, dest: Optional[str] = None,
    default: Any = None, **value_limits: Any,
) -> None:
    """
    A verb's option whose text is parsed as ``kind`` (a type annotation such
    as ``int``, ``Optional[int]`` or ``Tuple[int, ...]``) and checked against
    its :func:`~pyprobvae.config.limits`, exactly as settings are.
    """
    metadata = limits(**value_limits)
    metavar = "{" + ",".join(metadata["choices"]) + "}" if metadata["choices"] else (dest or flag[2:]).upper().replace("-", "_")
    parser.add_argument(flag, dest=dest, type=_parser_of(kind, metadata), default=default, metavar=metavar, help=help_text)


def _verb_option(
    parser: argparse._ActionsContainer, flag: str, function: Callable[..., Any], parameter: str, help_text: str,
    kind: Any = str, **value_limits: Any,
) -> None:
    """An :func:`_option` whose default is the verb's (shown in the help, left to the verb)."""
    default = _default(function, parameter)
    _option(parser, flag, f"{help_text} (default: {_show_default(default)})", kind, parameter, argparse.SUPPRESS, **value_limits)


def _device_option(parser: argparse._ActionsContainer) -> None:
    parser.add_argument("--device", default="cpu", help="where to compute: cpu, cuda, cuda:N (default: cpu)")


MAX_EXAMPLES = 100_000
"""The most examples a verb draws, decodes or reconstructs at once."""
MAX_STEPS = 10_000
"""The most points of one path or traversal."""


# ------------------------------------------------------------------- parser


TRAIN_HELP_CONCERNS = {
    "variational family q(z|x)": ("family", "num_components", "flow", "flow_depth"),
    "prior p(z)": ("prior", "prior_components"),
}
"""Groups of ``train --help`` that gather settings by concern across models (the rest are grouped by model)."""


def _add_train(commands: "argparse._SubParsersAction[_Parser]") -> None:
    p = commands.add_parser("train", help="train a model into a run folder")
    seen = _add_config_options(p.add_argument_group("data"), [DataConfig])
    group = p.add_argument_group("every model")
    models = ", ".join(f"{name} ({cls.description})" for name, cls in MODELS.items())
    group.add_argument("--model", choices=tuple(MODELS), default=argparse.SUPPRESS, help=f"the model: {models} (default: {DEFAULT_MODEL})")
    seen = _add_config_options(group, [ModelConfig], skip=("model",), seen=seen)
    for title, names in TRAIN_HELP_CONCERNS.items():
        owners = [cls for cls in MODELS.values() if set(names) <= _names(cls.Config)]
        seen = _add_config_options(p.add_argument_group(title), [owners[0].Config], only=names, seen=seen)
    for name, cls in MODELS.items():  # each remaining setting in the group of the first model that has it
        seen = _add_config_options(p.add_argument_group(f"{cls.description} (--model {name})"), [cls.Config], skip=("model",), seen=seen)
    seen = _add_config_options(p.add_argument_group("training"), [TrainConfig], seen=seen, text_defaults=TEXT_TRAINING)
    _add_config_options(p.add_argument_group("evaluation"), [EvaluationConfig], only=("iwae_samples",), seen=seen)
    group = p.add_argument_group("run folder")
    group.add_argument("--config", metavar="FILE",
                       help="settings from a JSON or TOML file laid out as a run's config.json (parts data, model, train, "
                            "evaluation; any may be left out); options given here override it")
    group.add_argument("--out", help="run folder (default runs/DATASET-MODEL-TIME)")
    group.add_argument("--resume", action="store_true", help="continue the checkpoint in --out (to --epochs)")
    group.add_argument("--overwrite", action="store_true",
                       help="replace the run --out holds (trained beside it, swapped in when complete)")
    _add_config_options(p.add_argument_group("TensorBoard"), [TensorBoardConfig])


def _add_run_commands(commands: "argparse._SubParsersAction[_Parser]") -> None:
    p = commands.add_parser("evaluate", help="print held-out metrics of a run as JSON")
    p.add_argument("run")
    _add_config_options(p, [EvaluationConfig])
    _device_option(p)

    p = commands.add_parser("train-prior", help="runs with discrete codes (VQ-VAE): fit a transformer prior to the run's codes (stage 2)")
    p.add_argument("run")
    seen = _add_config_options(p, [TransformerPriorConfig], text_defaults=TEXT_PRIOR)
    seen = _add_config_options(p, [PriorTrainConfig], seen=seen, text_defaults=TEXT_PRIOR_TRAINING)
    _add_config_options(p, [TensorBoardConfig], seen=seen)

    p = commands.add_parser("sample", help="decode draws from the prior")
    p.add_argument("run")
    _option(p, "--n", "how many (default: 64)", int, default=64, minimum=1, maximum=MAX_EXAMPLES)
    _verb_option(p, "--temperature", verbs.sample, "temperature", "scale of the codes' deviation from the prior mean (0 decodes the mean)",
                 float, minimum=0, maximum=100)
    _option(p, "--label", "conditional runs only: the class to sample (default: every class, one row each, --n rounded up "
            "to a multiple of the number of classes)", int, minimum=0, maximum=MAX_EXAMPLES)
    _option(p, "--codes", "autoencoder runs only: draw codes from N(0, I) (standard, default) or from a Gaussian "
            "fitted to the training codes (fitted)", choices=CODE_SOURCES)
    _option(p, "--top-k", "runs with discrete codes and a trained prior: draw each code from the K most likely only",
            int, minimum=1, maximum=65536)
    _option(p, "--top-p", "runs with discrete codes and a trained prior: draw each code from the most likely codes that "
            "together hold probability P (nucleus sampling)", float, above=0, maximum=1)
    group = p.add_mutually_exclusive_group()
    _option(group, "--complete", "runs with discrete codes: keep the codes of the top half of each of the first N test "
            "images (the first half of each text sequence) and draw the rest (picture: the images above their completions)",
            int, minimum=1, maximum=MAX_EXAMPLES)
    _option(group, "--prompt", "text runs: continue TEXT --n times (it is encoded, the codes covering it kept, the rest drawn)")
    p.add_argument("--out", required=True, help="FILE.png (grid), FILE.txt (text runs) or FILE.npy (array: values in [0, 1], or token ids)")
    _verb_option(p, "--seed", verbs.sample, "seed", "seed of the draws", int, **SEED)
    _device_option(p)

    p = commands.add_parser("reconstruct", help="reconstruct the first N test examples")
    p.add_argument("run")
    _option(p, "--n", "how many (default: 32)", int, default=32, minimum=1, maximum=MAX_EXAMPLES)
    p.add_argument("--out", required=True,
                   help="FILE.png (inputs above reconstructions), FILE.txt (text runs: each input, then its "
                        "reconstruction) or FILE.npy")
    _device_option(p)

    p = commands.add_parser("interpolate", help="decode paths between the codes of test examples")
    p.add_argument("run")
    _verb_option(p, "--pairs", verbs.interpolate, "pairs", "number of paths", int, minimum=1, maximum=MAX_EXAMPLES)
    _verb_option(p, "--steps", verbs.interpolate, "steps", "points per path, endpoints included", int, minimum=2, maximum=MAX_STEPS)
    _verb_option(p, "--method", verbs.interpolate, "method", "how to move between the codes", choices=INTERPOLATIONS)
    _option(p, "--classes", "conditional runs only: A,B moves the label from class A to class B with the style held, one row "
            "per --pairs style, instead of interpolating between test examples", Tuple[int, ...], minimum=0, maximum=MAX_EXAMPLES)
    _verb_option(p, "--seed", verbs.interpolate, "seed", "which test examples are paired", int, **SEED)
    p.add_argument("--out", required=True, help="FILE.png (one row per path) or FILE.npy (pairs, steps, *data_shape)")
    _device_option(p)

    p = commands.add_parser("traverse", help="sweep each latent dimension of one test example's code")
    p.add_argument("run")
    _verb_option(p, "--index", verbs.traverse, "index", "which test example", int, minimum=0, maximum=2**31 - 1)
    _verb_option(p, "--dims", verbs.traverse, "num_dims", "how many dimensions, most informative first (none: all)",
                 Optional[int], minimum=1, maximum=4096)
    _verb_option(p, "--steps", verbs.traverse, "steps", "values per dimension", int, minimum=1, maximum=MAX_STEPS)
    _verb_option(p, "--span", verbs.traverse, "span", "sweep z_d over [-span, span]", float, above=0, maximum=100)
    p.add_argument("--out", required=True, help="FILE.png (one row per dimension) or FILE.npy (dims, steps, *data_shape)")
    _device_option(p)

    p = commands.add_parser("encode", help="write the codes of a split")
    p.add_argument("run")
    _verb_option(p, "--split", verbs.encode, "split", "which split", choices=("train", "test"))
    p.add_argument("--out", required=True, help="FILE.npy, shape (N, latent_dim); code indices (N, positions) for discrete codes")
    _device_option(p)


def make_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="pyprobvae", description="Variational autoencoders as Pyro model/guide pairs.")
    parser.add_argument("--version", action="version", version=f"pyprobvae {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_train(commands)
    _add_run_commands(commands)
    for command in (parser, *commands.choices.values()):
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                             help="show the traceback of an error instead of one line")
    for command in commands.choices.values():
        command.add_argument("--quiet", action="store_true",
                             help="nothing on stderr but an error: no progress bar, per-epoch lines, notes or warnings")
    return parser


# ------------------------------------------------------------------- verbs


def _pick(given: Dict[str, Any], cls: Type[Config]) -> Dict[str, Any]:
    return {name: value for name, value in given.items() if name in _names(cls)}


CONFIG_PARTS = ("data", "model", "train", "evaluation")
"""The parts of a config file of ``train --config``, those of a run folder's ``config.json``."""


def read_config_file(path: str) -> dict:
    """
    The settings of a ``train --config`` file: JSON, or TOML for a ``.toml``
    file, holding an object whose keys are among :data:`CONFIG_PARTS`, each an
    object of settings (a run folder's ``config.json`` is one).

    :raises UsageError: for a file that cannot be read or is not laid out so.
    """
    try:
        if path.endswith(".toml"):
            try:
                import tomllib
            except ImportError:  # Python < 3.11
                raise UsageError(f"--config {path}: TOML files need Python 3.11 or later; give the settings as JSON") from None
            with open(path, "rb") as f:
                settings = tomllib.load(f)
        else:
            with open(path, encoding="utf-8") as f:
                settings = json.load(f)
    except OSError as e:
        raise UsageError(f"--config {path}: {e.strerror or e}") from None
    except ValueError as e:  # JSONDecodeError, TOMLDecodeError, UnicodeDecodeError
        raise UsageError(f"--config {path} is not valid {'TOML' if path.endswith('.toml') else 'JSON'}: {str(e).splitlines()[0]}") from None
    if not isinstance(settings, dict) or not all(isinstance(part, dict) for part in settings.values()):
        raise UsageError(f"--config {path}: expected an object of parts ({', '.join(CONFIG_PARTS)}), each an object of settings")
    unknown = sorted(set(settings) - set(CONFIG_PARTS))
    if unknown:
        raise UsageError(f"--config {path}: unknown part {unknown[0]!r}; the parts are {', '.join(CONFIG_PARTS)}")
    return {part: settings.get(part, {}) for part in CONFIG_PARTS}


def _configured(
    file: Dict[str, Any], given: Dict[str, Any],
) -> Tuple[DataConfig, ModelConfig, Dict[str, Any], EvaluationConfig]:
    """The four parts of a run from a config file's settings, each overridden by the options given on the command line."""
    name = given.pop("model", file["model"].get("model", DEFAULT_MODEL))
    cls = model_class(name)
    parts = (DataConfig, cls.Config, TrainConfig, EvaluationConfig)
    leftover = sorted(s for s in given if not any(s in _names(c) for c in parts) and setting_owners(s))
    if leftover:
        raise UsageError(inapplicable_reason(cls, leftover[0], _flag(leftover[0]), "--model {}"))
    data = DataConfig.from_dict({**file["data"], **_pick(given, DataConfig)})
    model = cls.Config.from_dict({**file["model"], "model": name, **_pick(given, cls.Config)})
    training = {**file["train"], **_pick(given, TrainConfig)}
    TrainConfig.from_dict(training)  # checked here; the run completes it with the data's defaults
    evaluation = EvaluationConfig.from_dict({**file["evaluation"], **_pick(given, EvaluationConfig)})
    return data, model, training, evaluation


def _tensorboard_options(given: Dict[str, Any]) -> TensorBoardConfig:
    """The TensorBoard options given, taken out of ``given`` (they are options of the command, not settings of the run)."""
    chosen = {name: given.pop(name) for name in _names(TensorBoardConfig) if name in given}
    if chosen.get("tensorboard") is False and "tensorboard_images_every" in chosen:
        raise UsageError("--tensorboard-images-every does not apply with --no-tensorboard")
    return TensorBoardConfig(**chosen)


def _train(args: argparse.Namespace) -> Optional[str]:
    given = {k: v for k, v in vars(args).items() if k not in ("command", "out", "resume", "overwrite", "quiet", "config")}
    tensorboard = _tensorboard_options(given)
    world = current_world()
    if args.config is not None and args.resume:
        raise UsageError("--resume continues a run with its own settings; --config gives a new run's")
    if args.config is not None:
        data, model, training, evaluation = _configured(read_config_file(args.config), given)
    elif args.resume:
        if args.out is None:
            raise UsageError("--resume needs --out RUN_DIR, the run to continue")
        if world.is_main:
            finish_replacement(args.out)
        if not os.path.isdir(args.out):
            raise CheckpointError(f"nothing to resume: run folder {args.out} does not exist")
        if not os.path.isfile(os.path.join(args.out, CONFIG)):
            raise CheckpointError(f"nothing to resume: run folder {args.out} holds no run (no {CONFIG})")
        saved = read_config(args.out)
        data = saved.data.replace(**_pick(given, DataConfig))
        assert saved.model is not None, "read_config gives every part of a run's config"
        model = saved.model
        changed = [name for name, value in given.items() if name in _names(type(model)) and getattr(model, name) != value]
        if changed:
            raise CheckpointError(f"cannot resume {args.out} with different settings: {_flag(changed[0])} changed (only --epochs may)")
        training = {**saved.train.to_dict(), **_pick(given, TrainConfig)}
        evaluation = saved.evaluation.replace(**_pick(given, EvaluationConfig))
    else:
        name = given.pop("model", DEFAULT_MODEL)
        cls = model_class(name)
        for setting in given:
            if setting in cls.unused_training_settings:
                raise UsageError(f"{_flag(setting)} does not apply to --model {name}")
            if not any(setting in _names(c) for c in (DataConfig, cls.Config, TrainConfig, EvaluationConfig)) and setting_owners(setting):
                raise UsageError(inapplicable_reason(cls, setting, _flag(setting), "--model {}"))
        data = DataConfig(**_pick(given, DataConfig))
        model = cls.Config(**_pick(given, cls.Config))
        training = _pick(given, TrainConfig)
        evaluation = EvaluationConfig(**_pick(given, EvaluationConfig))
    stem = os.path.basename(data.dataset).replace(".npz", "").replace("text:", "")
    out = args.out or _default_run_folder(stem, model.model, world)
    if args.resume and args.overwrite:
        raise UsageError("--resume continues a run and --overwrite replaces it: give one")
    metrics = verbs.train(out, data, model, training, evaluation, args.resume, args.overwrite, progress=not args.quiet,
                          tensorboard=tensorboard)
    if world.is_main:
        return json.dumps({**_summary(model.model, metrics), "run_folder": os.path.abspath(out)})
    return None


def _default_run_folder(stem: str, model: str, world: World) -> str:
    """``runs/STEM-MODEL-TIME``, by rank 0's clock on every rank."""
    started = world.broadcast(torch.tensor([time.time()], dtype=torch.float64)).item()
    return os.path.join("runs", f"{stem}-{model}-{time.strftime('%Y%m%d-%H%M%S', time.localtime(started))}")


def _summary(model: str, metrics: dict) -> dict:
    return {k: metrics[k] for k in model_class(model).summary_keys if k in metrics}


def _evaluate(args: argparse.Namespace) -> str:
    run = Run(args.run, args.device)
    given = {k: v for k, v in vars(args).items() if k in _names(EvaluationConfig)}
    return json.dumps(verbs.evaluate(run, EvaluationConfig(**given)))


def _train_prior(args: argparse.Namespace) -> Optional[str]:
    given = dict(vars(args))
    tensorboard = _tensorboard_options(given)
    training = _pick(given, PriorTrainConfig)
    run = Run(args.run, PriorTrainConfig(**training).device)
    metrics = verbs.train_prior(run, _pick(given, TransformerPriorConfig), training, progress=not args.quiet, tensorboard=tensorboard)
    if current_world().is_main:
        _note(f"prior stored in {os.path.abspath(run.path('checkpoint.pt'))}")
        assert run.config.model is not None, "read_config gives every part of a run's config"
        return json.dumps({**_summary(run.config.model.model, metrics), "run_folder": os.path.abspath(run.directory)})
    return None


def _note(text: str) -> None:
    """A note for the user: on stderr (silenced by ``--quiet``), never on stdout, which carries the result alone."""
    print(f"pyprobvae: {text}", file=sys.stderr)


def _verb_arguments(args: argparse.Namespace, *names: str) -> Dict[str, Any]:
    return {name: getattr(args, name) for name in names if hasattr(args, name)}


def _run_writing(args: argparse.Namespace, allowed: Sequence[str] = SUFFIXES) -> Run:
    """The run a verb reads, after its ``--out`` is found writable for what the verb writes."""
    run = Run(args.run, args.device)
    check_output(args.out, allowed, run.vocabulary)
    return run


def _sample(args: argparse.Namespace) -> str:
    run = _run_writing(args)
    plan = verbs.sampling_plan(run, args.n, label=args.label, codes=args.codes, top_k=args.top_k, top_p=args.top_p)
    note = run.model.sampling_note()
    if note:
        _note(note)
    arguments = _verb_arguments(args, "temperature", "seed")
    if args.complete is not None:
        title = "test images and their completions from the top half of their codes"
        completed = verbs.complete(run, args.complete, plan, **arguments)
        return write_reconstructions(*completed, args.out, run.vocabulary, title, labels=("test", "completed"))
    if args.prompt is not None:
        examples = verbs.continue_prompt(run, args.prompt, plan, **arguments)
    else:
        examples = verbs.sample(run, plan, **arguments)
    path = write_examples(examples, args.out, plan.nrow, run.vocabulary)
    if path.lower().endswith(".txt"):  # generated text is shown (on stderr, with the notes) as well as saved
        with open(path) as f:
            print(f.read(), end="", file=sys.stderr)
    return path


def _reconstruct(args: argparse.Namespace) -> str:
    run = _run_writing(args)
    return write_reconstructions(*verbs.reconstruct(run, args.n), args.out, run.vocabulary)


def _interpolate(args: argparse.Namespace) -> str:
    run = _run_writing(args, (".png", ".npy"))
    if args.classes is not None:
        if len(args.classes) != 2:
            raise UsageError(f"--classes takes two classes A,B, got {','.join(map(str, args.classes))}")
        arguments = _verb_arguments(args, "steps", "seed")
        if hasattr(args, "pairs"):
            arguments["paths"] = args.pairs
        strips = verbs.interpolate_classes(run, args.classes, **arguments)
        title = "label interpolation {} -> {}".format(*args.classes)
    else:
        strips = verbs.interpolate(run, **_verb_arguments(args, "pairs", "steps", "method", "seed"))
        title = f"{getattr(args, 'method', _default(verbs.interpolate, 'method'))} interpolation"
    return write_paths(strips, args.out, title=title)


def _traverse(args: argparse.Namespace) -> str:
    run = _run_writing(args, (".png", ".npy"))
    strips = verbs.traverse(run, **_verb_arguments(args, "index", "num_dims", "steps", "span"))
    return write_paths(strips, args.out, title="latent traversals, most informative dimension first")


def _encode(args: argparse.Namespace) -> str:
    run = _run_writing(args, (".npy",))
    return write_array(verbs.encode(run, **_verb_arguments(args, "split")), args.out)


COMMANDS: Dict[str, Callable[[argparse.Namespace], Optional[str]]] = {
    # each returns its result, the one thing main prints on stdout (None: nothing, on the other processes)
    "train": _train,
    "train-prior": _train_prior,
    "evaluate": _evaluate,
    "sample": _sample,
    "reconstruct": _reconstruct,
    "interpolate": _interpolate,
    "traverse": _traverse,
    "encode": _encode,
}


DISTRIBUTED_COMMANDS = ("train", "train-prior")
"""The commands that run on several processes under ``torchrun`` (the others read a run in one)."""

USER_ERRORS = (UsageError, ConfigError, DataError, CheckpointError, ResourceError, OutputPathError, PeerError)
"""What the user can mend: reported in one line, exit status 2."""

def _raised_here(error: BaseException) -> bool:
    """Whether ``error`` was raised by pyprobvae's own code (a check), not inside a library it calls."""
    frames = traceback.extract_tb(error.__traceback__)
    return bool(frames) and os.path.abspath(frames[-1].filename).startswith(os.path.dirname(os.path.abspath(__file__)) + os.sep)


def _out_of_memory(error: BaseException) -> bool:
    return isinstance(error, (MemoryError, torch.OutOfMemoryError)) or (
        isinstance(error, RuntimeError) and ("can't allocate memory" in str(error) or "out of memory" in str(error))
    )


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def main(argv: Optional[Sequence[str]] = None) -> int:
    """
    Entry point of the ``pyprobvae`` command; returns the exit status: 0
    done, 1 training diverged, 2 what was asked for cannot be done (a bad
    option, file, run folder, device or path, or too little memory; one
    line on stderr saying which), 3 a bug in pyprobvae (one line asking for a
    report; ``--debug`` shows the traceback). Interrupted: 130. stdout
    receives the verb's result alone, after it is done; the errors go to
    stderr, with ``--quiet`` too (:func:`_output_streams`).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv
    prefix = "pyprobvae"
    stdout = sys.stdout
    try:
        args = make_parser().parse_args(argv)
        with _output_streams(args.quiet):
            _join_processes(args)
            prefix = _message_prefix()
            result = COMMANDS[args.command](args)
        if result is not None:
            print(result, file=stdout, flush=True)
    except NonFiniteLossError as e:
        print(f"{prefix}: training diverged: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prefix}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if isinstance(e, USER_ERRORS) or (isinstance(e, ValueError) and _raised_here(e)):
            message = _first_line(e)
        elif lost_peer(e):
            message = f"lost contact with the other processes of the run ({_first_line(e).split('. ')[0]})"
        elif isinstance(e, OSError):
            message = f"{e.filename}: {e.strerror}" if e.filename and e.strerror else _first_line(e)
        elif _out_of_memory(e):
            message = f"out of memory ({_first_line(e)}); ask for less: smaller sizes, --batch-size or --n"
        else:
            if debug:
                raise
            print(f"{prefix}: internal error: {type(e).__name__}: {_first_line(e)}. This is a bug in pyprobvae "
                  f"{__version__}: please report it with the command line (--debug shows the traceback)",
                  file=sys.stderr)
            return 3
        if debug:
            raise
        print(f"{prefix}: error: {message}", file=sys.stderr)
        return 2
    finally:
        shut_down()
    return 0


@contextlib.contextmanager
def _output_streams(quiet: bool) -> Iterator[None]:
    """
    While a verb computes: whatever it or a library prints on stdout (the
    per-epoch lines of training, say) goes to stderr, keeping stdout for the
    result; with ``quiet`` both go nowhere, warnings and notes included. An
    error is reported after, on the real stderr.
    """
    with contextlib.ExitStack() as stack:
        target = stack.enter_context(open(os.devnull, "w")) if quiet else sys.stderr
        stack.enter_context(contextlib.redirect_stdout(target))
        stack.enter_context(contextlib.redirect_stderr(target))
        yield


def _join_processes(args: argparse.Namespace) -> None:
    """
    Under ``torchrun`` (several processes), join the process group for
    ``train`` and ``train-prior``; refuse the other commands, which read a
    run in one process.
    """
    if launched_size() <= 1:
        return
    if args.command not in DISTRIBUTED_COMMANDS:
        raise UsageError(f"{args.command} runs in one process; under torchrun only {' and '.join(DISTRIBUTED_COMMANDS)} do")
    init_from_environment(getattr(args, "device", "cpu"))


def _message_prefix() -> str:
    """``pyprobvae``, or with several processes ``pyprobvae (process R of N)``, which begins every line on stderr."""
    world = current_world()
    return f"pyprobvae ({world.describe()})" if world.distributed else "pyprobvae"


if __name__ == "__main__":
    sys.exit(main())
