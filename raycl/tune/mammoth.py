"""mammoth's best-arguments files, read and written, with names mapped between mammoth and raycl.

Two formats (aimagelab/mammoth; NeurAI-Lab's CLS-ER and SYNERgy repositories ship the first):

``utils/best_args.py``
    a Python dict ``best_args[dataset][model][buffer size] -> {argument: value}``; a model without a
    buffer has the one key -1. It is parsed, never executed.
``models/config/<model>.yaml``
    what ``--model_config best`` reads: an optional ``default`` section of arguments, then per
    dataset its arguments and, for a model with a buffer, a section per buffer size; for a run
    mammoth merges default < dataset < buffer size. Sections may name ``model`` (the file's model)
    and ``dataset_config`` (one of mammoth's dataset configuration files, which raycl does not
    read: it is reported as an argument raycl lacks).

The names: :data:`DATASETS` and :data:`MODELS` map benchmark and method names, :data:`ARGUMENTS`
the arguments each method shares with mammoth's model of it.
"""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path
from typing import Any

import yaml

from raycl.errors import RayclError
from raycl.files import atomic_write_text, locked, read_yaml
from raycl.hparams import param_specs
from raycl.methods import get_method

# raycl benchmark -> mammoth dataset, where the two are the same protocol.
DATASETS = {"seq-mnist": "seq-mnist", "perm-mnist": "perm-mnist", "rot-mnist": "rot-mnist",
            "seq-cifar10": "seq-cifar10"}
# raycl method -> mammoth model, where the names differ (the rest are the same name).
MODELS = {"ewc": "ewc_on", "online": "sgd"}

_TRAINING = {"lr": "lr", "batch_size": "batch_size", "n_epochs": "n_epochs", "optimizer": "optimizer"}
_REPLAY = {**_TRAINING, "minibatch_size": "minibatch_size"}
# Per raycl method: mammoth argument -> raycl hyperparameter. buffer_size is the section's key in
# both formats, so it is no argument here.
ARGUMENTS: dict[str, dict[str, str]] = {
    "sgd": _TRAINING, "online": _TRAINING, "joint": _TRAINING,
    "er": _REPLAY, "agem": _REPLAY,
    "der": {**_REPLAY, "alpha": "alpha"},
    "derpp": {**_REPLAY, "alpha": "alpha", "beta": "beta"},
    "ewc": {**_TRAINING, "e_lambda": "ewc_lambda", "gamma": "gamma"},
    "gem": {**_TRAINING, "gamma": "memory_strength"},
    "mer": {**_REPLAY, "beta": "beta", "gamma": "gamma", "batch_num": "batches_per_example"},
    "clser": {**_REPLAY, "reg_weight": "reg_weight", "plastic_model_update_freq": "plastic_update_freq",
              "plastic_model_alpha": "plastic_alpha", "stable_model_update_freq": "stable_update_freq",
              "stable_model_alpha": "stable_alpha"},
    "synergy": {**_REPLAY, **{n: n for n in ("reg_weight", "ema_alpha", "ema_update_freq", "penalty_weight",
                                            "fisher_alpha", "fisher_update_freq")}},
}
# mammoth's optimiser arguments that raycl's SGD and Adam hold at these values (no weight decay, no
# momentum): a file giving them these values asks for what raycl does.
OPTIMIZER_AS_RAYCL = {"optim_wd": 0.0, "optim_mom": 0.0, "optim_nesterov": False}
# A section's model name (no argument), and the section of arguments for every dataset.
MODEL_KEY, DEFAULT_SECTION = "model", "default"
NO_BUFFER = -1  # utils/best_args.py's key for a model without a buffer


def mammoth_dataset(dataset: str) -> str:
    """mammoth's name of raycl benchmark ``dataset`` (its own name where mammoth has none)."""
    return DATASETS.get(dataset, dataset)


def mammoth_model(method: str) -> str:
    """mammoth's model name of raycl ``method`` (a plugin named ``package.module:Class`` goes by its
    class's ``name``: a file name holds no colon)."""
    if ":" in method:
        method = get_method(method).name
    return MODELS.get(method, method)


def has_buffer(method: str) -> bool:
    return "buffer_size" in param_specs(get_method(method).Config)


@dataclasses.dataclass(frozen=True)
class MappedArguments:
    """A mammoth entry in raycl's names: ``values`` (as the file gave them, not yet checked) and
    ``unmapped``, the arguments raycl has no hyperparameter for."""

    values: dict[str, Any]
    unmapped: dict[str, Any]


def to_raycl(method: str, arguments: dict[str, Any]) -> MappedArguments:
    """``arguments`` (mammoth's names) as ``method``'s hyperparameters. An argument not in the
    method's table maps to the raycl hyperparameter of the same name if the method declares one."""
    table = ARGUMENTS.get(method, {})
    declared = param_specs(get_method(method).Config)
    values, unmapped = {}, {}
    for name, value in arguments.items():
        if name == MODEL_KEY:
            continue
        target = table.get(name, name if name in declared and name != "buffer_size" else None)
        if target is not None:
            values[target] = value
        elif name in OPTIMIZER_AS_RAYCL and _same(value, OPTIMIZER_AS_RAYCL[name]):
            continue
        else:
            unmapped[name] = value
    return MappedArguments(values, unmapped)


def _same(value: Any, expected: Any) -> bool:
    try:
        return float(value) == float(expected)
    except (TypeError, ValueError):
        return False


def to_mammoth(method: str, config: dict[str, Any]) -> dict[str, Any]:
    """The hyperparameters of ``config`` that mammoth's model of ``method`` has, in mammoth's names;
    for a method mammoth lacks (no table), every one but the buffer size under raycl's name."""
    if method not in ARGUMENTS:
        return {name: value for name, value in config.items() if name != "buffer_size"}
    return {mammoth: config[raycl] for mammoth, raycl in ARGUMENTS[method].items() if raycl in config}


# ----- utils/best_args.py -----------------------------------------------------------------------
def read_best_args_py(path: str | Path) -> dict:
    """The ``best_args`` dict of a mammoth ``utils/best_args.py``, parsed without running the file."""
    path = Path(path)
    if not path.is_file():
        raise RayclError(f"file not found: {path}")
    try:
        tree = ast.parse(path.read_text(), filename=str(path))
    except SyntaxError as exc:
        raise RayclError(f"{path} is not valid Python: {exc.msg} (line {exc.lineno})") from None
    for node in tree.body:
        targets = (node.targets if isinstance(node, ast.Assign)
                   else [node.target] if isinstance(node, ast.AnnAssign) else [])
        if any(isinstance(t, ast.Name) and t.id == "best_args" for t in targets) and node.value is not None:
            try:
                data = ast.literal_eval(node.value)
            except ValueError:
                raise RayclError(f"{path}: best_args is not a plain dict of literals (line {node.lineno})") from None
            if not isinstance(data, dict):
                raise RayclError(f"{path}: best_args is a {type(data).__name__}, not a dict")
            return data
    raise RayclError(f"{path}: no `best_args = {{...}}` assignment (mammoth's utils/best_args.py format)")


def best_args_py_entry(data: dict, source: str, dataset: str, method: str, buffer_size: int | None) -> dict:
    """The arguments ``best_args[dataset][model][buffer size]`` (-1 for a method without a buffer)."""
    name, model = mammoth_dataset(dataset), mammoth_model(method)
    if name not in data:
        raise _missing(source, "dataset", name, data)
    models = _mapping(data[name], source, f"best_args[{name!r}]", "models")
    if model not in models:
        raise _missing(source, f"model for dataset {name!r}", model, models)
    sizes = _mapping(models[model], source, f"best_args[{name!r}][{model!r}]", "buffer sizes")
    key = NO_BUFFER if buffer_size is None else buffer_size
    if key not in sizes:
        raise _missing(source, f"buffer size for {name}/{model}", key, sizes,
                       hint=" (pass --buffer-size)" if buffer_size is not None else "")
    return _mapping(sizes[key], source, f"best_args[{name!r}][{model!r}][{key}]", "arguments")


def _mapping(value: Any, source: str, where: str, of: str) -> dict:
    """``value`` (None: empty) if it is a mapping, else one RayclError naming ``where`` in ``source``."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RayclError(f"{source}: {where} must map {of}, not be a {type(value).__name__}")
    return dict(value)


# ----- models/config/<model>.yaml ---------------------------------------------------------------
def _buffer_sections(section: dict) -> dict[int, dict]:
    return {int(k): v for k, v in section.items() if _is_size(k) and isinstance(v, dict)}


def _is_size(key: Any) -> bool:
    return (isinstance(key, int) and not isinstance(key, bool)) or (isinstance(key, str) and key.isdigit())


def model_config_entry(data: dict, source: str, dataset: str, method: str, buffer_size: int | None) -> dict:
    """The arguments mammoth's ``--model_config best`` takes from a ``models/config/<model>.yaml``
    for ``dataset`` and ``buffer_size`` (None: a method without a buffer): default, then the
    dataset's arguments, then its buffer size's."""
    model = mammoth_model(method)
    named = {s.get(MODEL_KEY) for s in _sections(data) if isinstance(s.get(MODEL_KEY), str)}
    if named and model not in named:
        raise RayclError(f"{source} is mammoth's configuration of model {', '.join(sorted(named))}, not of "
                         f"{model!r} (raycl method {method!r})")
    name = mammoth_dataset(dataset)
    if name not in data or not isinstance(data[name], dict):
        raise _missing(source, "dataset", name, {k for k in data if k != DEFAULT_SECTION})
    section = data[name]
    sizes = _buffer_sections(section)
    arguments = {k: v for k, v in section.items() if not _is_size(k) and not isinstance(v, dict)}
    if buffer_size is not None:
        if buffer_size not in sizes:
            raise _missing(source, f"buffer size for {name}/{model}", buffer_size, sizes, hint=" (pass --buffer-size)")
        arguments.update(sizes[buffer_size])
    return {**_mapping(data.get(DEFAULT_SECTION), source, DEFAULT_SECTION, "arguments"), **arguments}


def _sections(data: dict) -> list[dict]:
    out = []
    for key, section in data.items():
        if isinstance(section, dict):
            out.append(section)
            if key != DEFAULT_SECTION:
                out.extend(_buffer_sections(section).values())
    return out


def _missing(source: str, kind: str, name: Any, present, hint: str = "") -> RayclError:
    listed = ", ".join(str(p) for p in sorted(present, key=str)) or "(none)"
    return RayclError(f"{source} has no {kind} {name!r}{hint}; it has: {listed}")


def read_model_config(path: str | Path, dataset: str, method: str, buffer_size: int | None = None) -> dict:
    """The hyperparameters a mammoth ``models/config/<model>.yaml`` gives ``method`` on ``dataset``
    with ``buffer_size`` (the method's default when None), in raycl's names; with ``buffer_size``
    the entry's key: what a mammoth run of it would train with."""
    data = read_yaml(path) or {}
    if not isinstance(data, dict):
        raise RayclError(f"{path}: expected mammoth's model configuration (dataset -> arguments)")
    size = entry_buffer_size(method, buffer_size)
    values = to_raycl(method, model_config_entry(data, str(path), dataset, method, size)).values
    return values if size is None else {**values, "buffer_size": size}


def entry_buffer_size(method: str, buffer_size: int | None) -> int | None:
    """The buffer size whose entry a search of ``method`` reads: ``buffer_size`` or the method's
    default; None for a method without a buffer."""
    if not has_buffer(method):
        return None
    return buffer_size if buffer_size is not None else param_specs(get_method(method).Config)["buffer_size"].default


def save_model_config(path: str | Path, dataset: str, method: str, config: dict) -> None:
    """Merge ``config`` (raycl's names, with its buffer size) into mammoth's ``models/config/<model>.yaml``
    at ``path`` as the entry of ``dataset`` and its buffer size, keeping every other entry."""
    path = Path(path)
    arguments = {MODEL_KEY: mammoth_model(method), **to_mammoth(method, config)}
    with locked(path):
        data = (read_yaml(path) or {}) if path.is_file() else {}
        if not isinstance(data, dict):
            raise RayclError(f"{path}: expected mammoth's model configuration (dataset -> arguments)")
        section = data.setdefault(mammoth_dataset(dataset), {})
        if not isinstance(section, dict):
            raise RayclError(f"{path}: {mammoth_dataset(dataset)} must map arguments and buffer sizes; fix the file "
                             "or choose another")
        if has_buffer(method):
            section[int(config["buffer_size"])] = arguments
        else:
            section.update(arguments)
        atomic_write_text(path, yaml.safe_dump(data, sort_keys=False))
