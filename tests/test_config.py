"""Settings dataclasses: one home per default, documented, checked, stored and rebuilt exactly."""

import dataclasses
import json
import re
from typing import Optional, Tuple

import pytest

from pyprobvae.cli import make_parser
from pyprobvae.config import Config, ConfigError, field_docs, setting
from pyprobvae.evaluation import ClassifierConfig, EvaluationConfig
from pyprobvae.infer import LoopConfig, PriorTrainConfig, TrainConfig
from pyprobvae.models import MODELS
from pyprobvae.priors import TransformerPriorConfig
from pyprobvae.runs import DataConfig
from pyprobvae.runs.tensorboard import TensorBoardConfig

CONFIGS = [cls.Config for cls in MODELS.values()] + [
    LoopConfig, TrainConfig, PriorTrainConfig, ClassifierConfig, TransformerPriorConfig, DataConfig, EvaluationConfig,
    TensorBoardConfig,
]


@dataclasses.dataclass
class Example(Config):
    """A config for the tests."""

    width: int = setting(4, minimum=1, maximum=4096)
    """How wide."""
    widths: Tuple[int, ...] = setting((3, 2), minimum=1)
    """Layer widths."""
    rate: float = setting(0.5, minimum=0, below=1, what="rate of things")
    kind: Optional[str] = setting(None, choices=("a", "b"))
    """Which kind; none for no kind."""
    flag: bool = False


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__name__)
def test_every_setting_is_documented_and_round_trips_through_json(cls):
    docs = field_docs(cls)
    missing = [f.name for f in dataclasses.fields(cls) if f.name not in docs]
    assert missing == [], f"{cls.__name__}: settings without a docstring: {missing}"
    if cls.__name__ == "CVAEConfig":
        return  # needs num_classes from data; covered by tests/models/test_registry.py
    config = cls()
    assert cls.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_attribute_docstrings_are_read():
    assert field_docs(Example) == {"width": "How wide.", "widths": "Layer widths.", "kind": "Which kind; none for no kind."}


def test_values_are_converted_to_the_fields_types():
    config = Example(width=3, widths=[5, 6], rate=0, kind="a")
    assert config.widths == (5, 6) and isinstance(config.rate, float)
    assert Example.from_dict(json.loads(json.dumps(config.to_dict()))) == config


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(width=0), "width must be in [1, 4096], got 0"),
        (dict(width=2.5), "width must be an integer, got 2.5"),
        (dict(width=True), "width must be an integer"),
        (dict(widths=(3, 0)), "widths must be >= 1, got 0"),
        (dict(widths="3,2"), "widths must be a sequence of integers"),
        (dict(rate=1.0), "rate must be in [0, 1), got 1.0"),
        (dict(rate=float("nan")), "rate must be a finite number, got nan"),
        (dict(rate=float("inf")), "rate must be a finite number, got inf"),
        (dict(rate=1e-300), "rate must be between 1.2e-38 and 3.4e+38 in size (float32), got 1e-300"),
        (dict(width=10**12), "width must be in [1, 4096], got 1000000000000"),
        (dict(kind="c"), "unknown kind 'c'; choose one of a, b"),
        (dict(flag="yes"), "flag must be true or false"),
        (dict(width=None), "width must be set"),
    ],
)
def test_bad_values_name_the_setting(settings, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        Example(**settings)


def test_from_dict_names_unknown_settings_and_replace_checks():
    with pytest.raises(ConfigError, match="Example has no setting 'depth'; its settings are flag, kind, rate, width, widths"):
        Example.from_dict({"depth": 3})
    with pytest.raises(ConfigError, match=re.escape("width must be in [1, 4096]")):
        Example().replace(width=-1)


def test_defaults_live_in_the_configs_only():
    """The command line holds no default of a setting: an option left out is absent, and the config's default applies."""
    args = make_parser().parse_args(["train"])
    assert {k for k in vars(args)} == {"command", "config", "out", "resume", "overwrite", "quiet"}  # the run-folder options
    assert TrainConfig().epochs == 100  # the one default of the number of epochs (the CLI's, the API's)
    help_text = make_parser()._subparsers._group_actions[0].choices["train"].format_help()
    assert "Passes over the training data. (default: 100; for text: 10)" in " ".join(help_text.split())


def test_every_user_setting_of_every_model_is_a_train_option():
    train = make_parser()._subparsers._group_actions[0].choices["train"]
    options = {action.dest for action in train._actions}
    for cls in CONFIGS:
        if cls in (PriorTrainConfig, ClassifierConfig, TransformerPriorConfig, EvaluationConfig, LoopConfig):
            continue
        user = {f.name for f in dataclasses.fields(cls) if not f.metadata.get("derived")}
        assert user <= options, (cls.__name__, user - options)


def test_a_record_written_before_a_setting_existed_reads_as_earlier_versions_behaved():
    @dataclasses.dataclass
    class Versioned(Config):
        width: int = setting(8)
        depth: int = setting(3, since="0.3.0")
        length: int = setting(128, since="0.3.0", before=64)

    old = {"width": 5}
    assert Versioned.with_newer_defaults(old) == {"width": 5, "depth": 3, "length": 64}
    assert Versioned.with_newer_defaults({"width": 5, "length": 32}) == {"width": 5, "depth": 3, "length": 32}
    assert Versioned.from_dict(Versioned.with_newer_defaults(old)) == Versioned(width=5, length=64)
    with pytest.raises(ValueError, match="give since too"):
        setting(1, before=2)
    # the defaults 0.3.0 changed: text runs of 0.2.0 had 64-character sequences and two characters per code
    assert DataConfig.with_newer_defaults({"dataset": "text"})["seq_len"] == 64 != DataConfig().seq_len
    assert MODELS["vqvae"].Config.with_newer_defaults({})["tokens_per_code"] == 2 != MODELS["vqvae"].Config().tokens_per_code


def test_a_record_of_a_retired_setting_reads_as_what_says_the_same_now():
    @dataclasses.dataclass
    class Renamed(Config):
        retired = {"old_width": lambda value: {"width": value}}
        width: int = setting(8)

    assert Renamed.from_record({"old_width": 3}) == Renamed(width=3)
    assert Renamed.from_record({"old_width": 3, "width": 5}) == Renamed(width=5)  # the current name wins
    with pytest.raises(ConfigError, match="has no setting 'old_width'"):
        Renamed.from_dict({"old_width": 3})
    # 0.2.0's VQ-VAE commitment weight was beta, now the beta-VAE's KL weight (TrainConfig.beta)
    vqvae = MODELS["vqvae"].Config
    assert vqvae.with_newer_defaults({"beta": 0.5})["commitment_weight"] == 0.5
    assert "beta" not in vqvae.with_newer_defaults({"beta": 0.5})
