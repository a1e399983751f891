"""
Damaged run folders: a copy of a session run (of a drawn kind), damaged one
way, then given to every verb that works on a run (read from the parser),
``train --resume`` included, each on its own copy. A damage that touches
``checkpoint.pt`` or ``config.json`` must make every verb exit 2 with nothing
on stdout; any damage leaves the read-only verbs' run folder byte-identical.

Edits of the checkpoint's contents are made as the brief of the suite says:
``torch.load(weights_only=True)``, change, ``torch.save`` (the file's
checksum, where it has one, no longer matches). A drawn half of them are
re-checksummed with the package's own ``payload_checksum``, as a writer that
knows the format would do, to reach the checks behind the checksum; those
must be refused by the verbs that read the edited entry (:class:`Damage`).
A flipped byte that the reader ignores (the file reads back the same) is no
damage to refuse.
"""

import json
import os
import shutil

import numpy as np
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

import pyprobvae.infer.checkpoint as checkpoint_module

from .harness import Case, expect, fuzz_settings, verb_parsers
from .world import (KINDS, PRIOR_KIND, RUN_VERBS, copy_inputs, copy_run, fresh_case, keep_known, resolve, run_base,
                    set_targets, tiny_arrays)

RUN_KINDS = [*KINDS, PRIOR_KIND]
CHECKPOINT, CONFIG, METRICS, CLASSIFIER = "checkpoint.pt", "config.json", "metrics.json", "classifier.pt"
MARKER = "pickle-ran-here"


class _RunsCode:
    """Unpickling this makes the folder :data:`MARKER` in the working directory: code ran."""

    def __reduce__(self):
        return os.mkdir, (MARKER,)


class Damage(str):
    """
    A damage's description and its scope: which verbs must refuse the run
    folder it leaves. ``all``: every verb; ``resume``: ``train --resume``, the
    one verb that reads every entry of the checkpoint (a re-checksummed edit
    of the optimizer's or the random state, which the other verbs never
    read); ``none``: no verb (the file differs but reads back the same, or
    the damage is outside the checkpoint and ``config.json``).
    """

    def __new__(cls, text, scope="all"):
        damage = super().__new__(cls, text)
        damage.scope = scope
        return damage


def _same(a, b) -> bool:
    """Whether two loaded checkpoints hold the same values."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype and \
            a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


# ------------------------------------------------------------------ values

def _invalid_values(old):
    """Values of another type than ``old`` (so never a valid setting), for configs and checkpoint entries."""
    if isinstance(old, bool):
        return ["yes", 2, [], {}]
    if isinstance(old, int):
        return ["abc", 1.5, [], {}, True]
    if isinstance(old, float):
        return ["abc", [], {}, True]
    if isinstance(old, str):
        return [5, [], {}, True, "zzz-unknown"]
    if isinstance(old, (list, tuple)):
        return ["8", 5, {}, ["a"], [1.5]]
    if isinstance(old, dict):
        return [[], "x", 5, True]
    if old is None:
        return [[], {}, True, 1.5]
    if isinstance(old, torch.Tensor):
        return ["abc", 5, None, [], torch.zeros(3, 3)]
    return ["abc", 5, None]


def _model_config_values(old):
    """Values a model's config must refuse: out of range, absurd, of another type."""
    if isinstance(old, bool):
        return ["yes", 2]
    if isinstance(old, int):
        return [-1, 0, 10**12, "abc", 1.5]
    if isinstance(old, float):
        return [float("nan"), -1.0, float("inf"), "abc"]
    if isinstance(old, str):
        return ["zzz-unknown", 5, ""]
    if isinstance(old, (list, tuple)):
        return [[], [0], [-1], [10**9], [1, 10**6, 10**6], "8"]
    if old is None:
        return [[], 1.5, "abc"]
    return ["abc", 5]


# ------------------------------------------------------------------ damages of checkpoint.pt

def _bytes(folder, name=CHECKPOINT):
    with open(os.path.join(folder, name), "rb") as f:
        return f.read()


def _put(folder, content, name=CHECKPOINT):
    path = os.path.join(folder, name)
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)
    with open(path, "wb") as f:
        f.write(content)


def flip_byte(folder, draw, runs, kind, name=CHECKPOINT):
    path = os.path.join(folder, name)
    before = torch.load(path, weights_only=True)
    content = bytearray(_bytes(folder, name))
    position = draw(st.integers(0, len(content) - 1), label="byte")
    content[position] ^= 1 << draw(st.integers(0, 7), label="bit")
    _put(folder, bytes(content), name)
    try:
        inert = _same(before, torch.load(path, weights_only=True))
    except Exception:
        inert = False
    if inert:  # a byte of the zip's bookkeeping that the reader ignores: the file reads back the same
        return Damage(f"flipped a bit of byte {position} (reads back the same)", "none")
    return f"flipped a bit of byte {position}"


def truncate(folder, draw, runs, kind, name=CHECKPOINT):
    content = _bytes(folder, name)
    size = draw(st.sampled_from([0, 1, 64, len(content) // 2, len(content) - 1]), label="size")
    _put(folder, content[:size], name)
    return f"truncated to {size} bytes"


def garbage(folder, draw, runs, kind, name=CHECKPOINT):
    content = draw(st.sampled_from([b"", b"{}", b"\x00" * 1000, b"PK\x03\x04" + b"\x00" * 200, b"\x80\x02}q\x00."]),
                   label="content")
    _put(folder, content, name)
    return f"replaced by {content[:12]!r}"


def other_kind(folder, draw, runs, kind, name=CHECKPOINT):
    other = draw(st.sampled_from([k for k in RUN_KINDS if k != kind]), label="other kind")
    shutil.copyfile(os.path.join(runs[other], name), os.path.join(folder, name))
    return f"the {other} run's {name}"


def delete(folder, draw, runs, kind, name=CHECKPOINT):
    os.remove(os.path.join(folder, name))
    return "deleted"


def make_directory(folder, draw, runs, kind, name=CHECKPOINT):
    path = os.path.join(folder, name)
    os.remove(path)
    os.makedirs(os.path.join(path, "inside"))
    return "a directory"


def dangling_symlink(folder, draw, runs, kind, name=CHECKPOINT):
    path = os.path.join(folder, name)
    os.remove(path)
    os.symlink("nowhere-" + name, path)
    return "a dangling symlink"


def _state(top):
    """The run's state inside a loaded checkpoint: the dict that holds ``model_config`` (at any depth)."""
    if isinstance(top, dict):
        if "model_config" in top:
            return top
        for value in top.values():
            found = _state(value)
            if found is not None:
                return found
    return None


def _dicts(value, keys=(), depth=3):
    """Every non-empty dict of the loaded checkpoint down to ``depth``: ``(path, keys, dict)``."""
    found = []
    if isinstance(value, dict) and value:
        found.append(("".join(f"[{k!r}]" for k in keys) or "<file>", keys, value))
        if depth:
            for key in sorted(value, key=str):
                found += _dicts(value[key], keys + (key,), depth - 1)
    return found


READ_BY_EVERY_VERB = ("<file>", "model", "model_config", "format", "checksum", "payload")
"""Entries of a checkpoint every verb reads (loading the model); the others only ``train --resume`` reads."""


def _equivalent_model_configs(a, b) -> bool:
    """Whether two stored model configs build the same model (a deleted setting may just take its default)."""
    try:
        from pyprobvae.models import config_from_dict
        return config_from_dict(dict(a)) == config_from_dict(dict(b))
    except Exception:
        return False


def _edit(folder, draw, change):
    """
    Load the checkpoint as the package does (weights only), change the run's
    state in it, save it back with torch.save. Where the file carries a
    checksum of its payload and the package exposes how it is computed, a
    drawn half of the edits are re-checksummed, as a writer that knows the
    format would do: those reach the checks behind the checksum.
    """
    path = os.path.join(folder, CHECKPOINT)
    top = torch.load(path, weights_only=True)
    state = _state(top)
    assume(state is not None)
    old_config = dict(state["model_config"]) if isinstance(state.get("model_config"), dict) else None
    description, entry = change(top, state)
    scope = "all"
    checksum = getattr(checkpoint_module, "payload_checksum", None)
    if isinstance(top, dict) and isinstance(top.get("checksum"), str) and isinstance(top.get("payload"), dict) and \
            checksum is not None and draw(st.booleans(), label="re-checksum"):
        try:
            top["checksum"] = checksum(top["payload"])
            description += " (re-checksummed)"
            scope = "all" if entry in READ_BY_EVERY_VERB else "resume"
            if entry == "model_config" and isinstance(state.get("model_config"), dict) and \
                    _equivalent_model_configs(old_config, state["model_config"]):
                scope = "none"
        except Exception:  # the edit put something in the payload that a checksum does not take
            pass
    torch.save(top, path)
    return Damage(description, scope)


def _entry(top, state, keys, key):
    """The entry of the run's state an edit at ``keys`` + ``key`` touches (``<file>`` outside the state)."""
    path = keys + (key,)
    if top is state:
        return path[0]
    return path[1] if len(path) > 1 and path[0] == "payload" else "<file>"


def _outer(top, state):
    """The dicts of the file's first two levels (the file and, when it wraps the state, the state)."""
    return [d for d in _dicts(top, depth=1) if d[2] is top or d[2] is state]


def _inner(top, state):
    """The dicts inside the state, with their keys from the file's top."""
    prefix = () if top is state else ("payload",)
    return [(where, prefix + keys, container) for where, keys, container in _dicts(state)[1:]]


def delete_key(folder, draw, runs, kind):
    def change(top, state):
        where, keys, container = draw(st.sampled_from(_outer(top, state)), label="where")
        key = draw(st.sampled_from(sorted(container, key=str)), label="key")
        del container[key]
        return f"{where} without {key!r}", _entry(top, state, keys, key)
    return _edit(folder, draw, change)


def delete_nested_key(folder, draw, runs, kind):
    def change(top, state):
        where, keys, container = draw(st.sampled_from(_inner(top, state)), label="where")
        key = draw(st.sampled_from(sorted(container, key=str)), label="key")
        del container[key]
        return f"{where} without {key!r}", _entry(top, state, keys, key)
    return _edit(folder, draw, change)


def retype(folder, draw, runs, kind):
    def change(top, state):
        where, keys, container = draw(st.sampled_from(_outer(top, state)), label="where")
        key = draw(st.sampled_from(sorted(container, key=str)), label="key")
        value = draw(st.sampled_from(_invalid_values(container[key])), label="value")
        container[key] = value
        return f"{where}[{key!r}] = {value!r}", _entry(top, state, keys, key)
    return _edit(folder, draw, change)


def retype_nested(folder, draw, runs, kind):
    def change(top, state):
        where, keys, container = draw(st.sampled_from(_inner(top, state)), label="where")
        key = draw(st.sampled_from(sorted(container, key=str)), label="key")
        value = draw(st.sampled_from(_invalid_values(container[key])), label="value")
        container[key] = value
        return f"{where}[{key!r}] = {value!r}", _entry(top, state, keys, key)
    return _edit(folder, draw, change)


def _weights(state):
    assume(isinstance(state.get("model"), dict))
    return sorted(k for k, v in state["model"].items() if isinstance(v, torch.Tensor))


def reshape_tensor(folder, draw, runs, kind):
    def change(top, state):
        key = draw(st.sampled_from(_weights(state)), label="tensor")
        tensor = state["model"][key]
        how = draw(st.sampled_from(["grow", "flatten", "empty", "scalar", "transpose"]), label="how")
        if how == "grow":
            new = torch.zeros((tensor.shape[0] + 1, *tensor.shape[1:]) if tensor.dim() else (2,), dtype=tensor.dtype)
        elif how == "flatten":
            new = tensor.reshape(-1, 1) if tensor.dim() <= 1 else tensor.reshape(-1)
        elif how == "empty":
            new = tensor.reshape(-1)[:0]
        elif how == "scalar":
            new = torch.zeros((), dtype=tensor.dtype) if tensor.dim() else torch.zeros(1, dtype=tensor.dtype)
        else:
            new = tensor.t().contiguous() if tensor.dim() == 2 and tensor.shape[0] != tensor.shape[1] else tensor.unsqueeze(0)
        assume(tuple(new.shape) != tuple(tensor.shape))
        state["model"][key] = new
        return f"model[{key!r}] of shape {tuple(new.shape)} instead of {tuple(tensor.shape)}", "model"
    return _edit(folder, draw, change)


def retype_tensor(folder, draw, runs, kind):
    def change(top, state):
        key = draw(st.sampled_from(_weights(state)), label="tensor")
        tensor = state["model"][key]
        dtype = draw(st.sampled_from([torch.float64, torch.int64, torch.bool, torch.float16, torch.complex64]), label="dtype")
        assume(dtype != tensor.dtype)
        state["model"][key] = tensor.to(dtype)
        return f"model[{key!r}] as {dtype}", "model"
    return _edit(folder, draw, change)


def non_finite_weight(folder, draw, runs, kind):
    def change(top, state):
        floats = [k for k in _weights(state) if state["model"][k].is_floating_point() and state["model"][k].numel()]
        key = draw(st.sampled_from(floats), label="tensor")
        tensor = state["model"][key].clone()
        index = draw(st.integers(0, tensor.numel() - 1), label="index")
        value = draw(st.sampled_from([float("nan"), float("inf"), float("-inf")]), label="value")
        tensor.view(-1)[index] = value
        state["model"][key] = tensor
        return f"model[{key!r}][{index}] = {value}", "model"
    return _edit(folder, draw, change)


def rng_size(folder, draw, runs, kind):
    def change(top, state):
        assume(isinstance(state.get("rng"), dict) and state["rng"])
        key = draw(st.sampled_from(sorted(state["rng"])), label="stream")
        old = state["rng"][key]
        how = draw(st.sampled_from(["short", "long", "float", "empty"]), label="how")
        new = {"short": lambda: old[:10], "long": lambda: torch.cat([old, old]), "float": lambda: old.float(),
               "empty": lambda: old[:0]}[how]()
        state["rng"][key] = new
        return f"rng[{key!r}] {how} ({tuple(new.shape)}, {new.dtype})", "rng"
    return _edit(folder, draw, change)


def model_config_value(folder, draw, runs, kind):
    def change(top, state):
        config = state["model_config"]
        key = draw(st.sampled_from(sorted(config)), label="setting")
        value = draw(st.sampled_from(_model_config_values(config[key])), label="value")
        config[key] = value
        return f"model_config[{key!r}] = {value!r}", "model_config"
    return _edit(folder, draw, change)


def model_config_unknown_key(folder, draw, runs, kind):
    return _edit(folder, draw, lambda top, state: (state["model_config"].update(zzz=1),
                                                   ("model_config with an unknown setting 'zzz'", "model_config"))[1])


def model_config_of_other_kind(folder, draw, runs, kind):
    other = draw(st.sampled_from([k for k in RUN_KINDS if k != kind]), label="other kind")
    theirs = _state(torch.load(os.path.join(runs[other], CHECKPOINT), weights_only=True))["model_config"]

    def change(top, state):
        assume(theirs != state["model_config"])
        state["model_config"] = theirs
        return f"the {other} run's model_config", "model_config"
    return _edit(folder, draw, change)


def format_tag(folder, draw, runs, kind):
    tag = draw(st.sampled_from(["pyprobvae-checkpoint-1", "pyprobvae-checkpoint-2", "pyprobvae-checkpoint-3",
                                "pyprobvae-checkpoint-99", "", 2]), label="tag")

    def change(top, state):
        assume(top.get("format") != tag)  # the current format is no damage
        top["format"] = tag
        return f"format {tag!r}", "<file>"
    return _edit(folder, draw, change)


def not_a_dict(folder, draw, runs, kind):
    value = draw(st.sampled_from([[1, 2], torch.zeros(2), "text", None]), label="value")
    torch.save(value, os.path.join(folder, CHECKPOINT))
    return f"torch.save({value!r})"


def pickled_code(folder, draw, runs, kind):
    def change(top, state):
        state[draw(st.sampled_from(["history", "zzz"]), label="key")] = _RunsCode()
        return "an object whose unpickling runs os.mkdir", "<file>"
    return _edit(folder, draw, change)


# ------------------------------------------------------------------ damages of config.json

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


def _config(folder):
    with open(os.path.join(folder, CONFIG)) as f:
        return json.load(f)


def _write_config(folder, config):
    with open(os.path.join(folder, CONFIG), "w") as f:
        json.dump(config, f)


def config_random_json(folder, draw, runs, kind):
    value = draw(st.sampled_from([[], None, {}, 0, "abc", True, [1, 2]]) | JSON, label="json")
    _write_config(folder, value)
    return f"config.json = {json.dumps(value)[:60]}"


def config_delete_section(folder, draw, runs, kind):
    config = _config(folder)
    key = draw(st.sampled_from(sorted(config)), label="section")
    del config[key]
    _write_config(folder, config)
    return f"config.json without {key!r}"


IDENTITY = ("data.dataset", "model.model", "model.data_shape", "model.hidden", "model.codebook_size", "model.latent_dim")
"""Settings whose default differs from the session runs' value: deleting one changes what the run is."""


def config_delete_setting(folder, draw, runs, kind):
    config = _config(folder)
    present = [k for k in IDENTITY if k.split(".")[1] in config.get(k.split(".")[0], {})]
    section, key = draw(st.sampled_from(present), label="setting").split(".")
    del config[section][key]
    _write_config(folder, config)
    return f"config.json without {section}.{key}"


def config_retype(folder, draw, runs, kind):
    config = _config(folder)
    section = draw(st.sampled_from(sorted(k for k, v in config.items() if isinstance(v, dict) and v)), label="section")
    key = draw(st.sampled_from(sorted(config[section])), label="setting")
    value = draw(st.sampled_from(_invalid_values(config[section][key])), label="value")
    config[section][key] = value
    _write_config(folder, config)
    return f"config.json {section}.{key} = {json.dumps(value)}"


def config_other_run(folder, draw, runs, kind):
    other = draw(st.sampled_from([k for k in RUN_KINDS if k != kind]), label="other kind")
    shutil.copyfile(os.path.join(runs[other], CONFIG), os.path.join(folder, CONFIG))
    return f"the {other} run's config.json"


def config_text(folder, draw, runs, kind):
    content = _bytes(folder, CONFIG)
    how = draw(st.sampled_from(["truncated", "empty", "not UTF-8", "garbage after", "deeply nested", "NaN", "BOM"]),
               label="how")
    new = {"truncated": content[: len(content) // 2], "empty": b"", "not UTF-8": b"\xff\xfe" + content[2:],
           "garbage after": content + b"}}}", "deeply nested": b"[" * 100_000 + b"]" * 100_000,
           "NaN": content.replace(b'"seed": 0', b'"seed": NaN'), "BOM": b"\xef\xbb\xbf" + content}[how]
    assume(new != content)
    _put(folder, new, CONFIG)
    return f"config.json {how}"


def config_data_elsewhere(folder, draw, runs, kind, staging=None):
    """config.json's data set replaced by a missing, broken or differently shaped file."""
    config = _config(folder)
    what = draw(st.sampled_from(["missing", "broken", "5x5 images", "a directory"]), label="data")
    path = os.path.join(staging, "elsewhere.npz")
    x, y = tiny_arrays()
    if what == "broken":
        with open(path, "wb") as f:
            f.write(b"broken")
    elif what == "5x5 images":
        np.savez(path, x=np.zeros((100, 5, 5), np.uint8), y=y)
    elif what == "a directory":
        os.makedirs(path)
    config["data"]["dataset"] = path
    _write_config(folder, config)
    return f"config.json's data set: {what}"


# ------------------------------------------------------------------ other damages (not checkpoint or config.json)

def data_relabelled(folder, draw, runs, kind, staging=None):
    """The run's data replaced by data of the same shape with other labels (an edit of the data, not of the run)."""
    config = _config(folder)
    path = os.path.join(staging, "relabelled.npz")
    x, y = tiny_arrays()
    np.savez(path, x=x, y=(y + 5) % 9)
    config["data"]["dataset"] = path
    _write_config(folder, config)
    return Damage("config.json's data set: the same images with other labels", "none")


def metrics_directory(folder, draw, runs, kind):
    return make_directory(folder, draw, runs, kind, METRICS)


def metrics_garbage(folder, draw, runs, kind):
    return garbage(folder, draw, runs, kind, METRICS)


def classifier_damage(folder, draw, runs, kind):
    assume(os.path.exists(os.path.join(folder, CLASSIFIER)))
    how = draw(st.sampled_from([flip_byte, truncate, garbage, make_directory]), label="how")
    return "classifier.pt " + how(folder, draw, runs, kind, CLASSIFIER)


def leftover_temporary(folder, draw, runs, kind):
    _put(folder, b"half a checkpoint", ".pyprobvae-abc123.tmp")
    return "a leftover temporary file"


def pictures_deleted(folder, draw, runs, kind):
    for name in os.listdir(folder):
        if name.endswith((".png", ".txt")):
            os.remove(os.path.join(folder, name))
    return "pictures deleted"


CORE = {  # damages of checkpoint.pt or config.json: every verb exits 2
    "checkpoint: flip a byte": flip_byte,
    "checkpoint: truncated": truncate,
    "checkpoint: garbage": garbage,
    "checkpoint: another kind's": other_kind,
    "checkpoint: deleted": delete,
    "checkpoint: a directory": make_directory,
    "checkpoint: dangling symlink": dangling_symlink,
    "checkpoint: key deleted": delete_key,
    "checkpoint: nested key deleted": delete_nested_key,
    "checkpoint: value of another type": retype,
    "checkpoint: nested value of another type": retype_nested,
    "checkpoint: tensor of another shape": reshape_tensor,
    "checkpoint: tensor of another dtype": retype_tensor,
    "checkpoint: non-finite weight": non_finite_weight,
    "checkpoint: rng state of the wrong size": rng_size,
    "checkpoint: model config value": model_config_value,
    "checkpoint: model config unknown setting": model_config_unknown_key,
    "checkpoint: model config of another kind": model_config_of_other_kind,
    "checkpoint: format tag": format_tag,
    "checkpoint: not a dict": not_a_dict,
    "checkpoint: pickled code": pickled_code,
    "config: random JSON": config_random_json,
    "config: section deleted": config_delete_section,
    "config: setting deleted": config_delete_setting,
    "config: value of another type": config_retype,
    "config: another run's": config_other_run,
    "config: bad text": config_text,
    "config: deleted": lambda folder, draw, runs, kind: delete(folder, draw, runs, kind, CONFIG),
    "config: a directory": lambda folder, draw, runs, kind: make_directory(folder, draw, runs, kind, CONFIG),
    "config: data set elsewhere": config_data_elsewhere,
}
OTHER = {
    "data set relabelled": data_relabelled,
    "metrics: a directory": metrics_directory,
    "metrics: garbage": metrics_garbage,
    "metrics: deleted": lambda folder, draw, runs, kind: delete(folder, draw, runs, kind, METRICS),
    "classifier: damaged": classifier_damage,
    "leftover temporary file": leftover_temporary,
    "pictures deleted": pictures_deleted,
}
DAMAGES = {**CORE, **OTHER}


def verb_command_lines():
    """Every verb that works on a run, with its tiny settings; ``train`` as ``train --resume`` (to 2 epochs)."""
    lines = {verb: run_base(verb) for verb in RUN_VERBS()}
    if "train" in verb_parsers():
        lines["train --resume"] = ["train", *keep_known("train", ["--resume", "--epochs", "2", "--quiet"]), "--out", "<run>"]
    return lines


def _damage(staging, folder, name, draw, runs, kind):
    damage = DAMAGES[name]
    if damage in (config_data_elsewhere, data_relabelled):
        return damage(folder, draw, runs, kind, staging=staging)
    return damage(folder, draw, runs, kind)


@pytest.mark.slow
@fuzz_settings(20)
@given(data=st.data())
def test_damaged_run_folders(data, fuzz_base, inputs, runs):
    kind = data.draw(st.sampled_from(RUN_KINDS), label="kind")
    name = data.draw(st.sampled_from(sorted(DAMAGES)), label="damage")
    with fresh_case(fuzz_base, inputs) as staging:
        damaged = copy_run(runs[kind], staging, "damaged")
        damage = _damage(staging.dir, damaged, name, data.draw, runs, kind)
        description = Damage(f"{kind} run, {name}: {damage}", getattr(damage, "scope", "all" if name in CORE else "none"))
        for verb, base in verb_command_lines().items():
            case = Case(fuzz_base)
            try:
                copy_inputs(inputs, case)
                case.guard_external(staging.dir)
                folder = case.path("run")
                shutil.copytree(damaged, folder, symlinks=True)
                argv = resolve([folder if str(a) == "<run>" else a for a in base], case, runs, folder)
                set_targets(case, argv, folder)
                scope = getattr(description, "scope", "all" if name in CORE else "none")
                required = scope == "all" or (scope == "resume" and verb == "train --resume")
                case.damaged = description if required and name in CORE else None
                case.forbidden.append(case.path(MARKER))
                expect(case.run(argv), case, context=f"damage: {description}")
            finally:
                case.cleanup()
