"""Config validation with one-line errors, and the job grid a study expands to.

Imported by the Snakefile at DAG-build time: keep it free of torch, Lightning and
MLflow imports.
"""

from __future__ import annotations

import copy
import difflib
import itertools
from pathlib import Path

import jsonschema
import yaml

from motifpipe.errors import MotifpipeError


def _with_defaults(validator_class):
    """Extend a jsonschema validator so that ``default`` values are filled in."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for key, sub in properties.items():
                if "default" in sub and key not in instance:
                    instance[key] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


_Validator = _with_defaults(jsonschema.Draft7Validator)


def load_schema(path: str | Path) -> dict:
    """Read a YAML/JSON schema file."""
    return yaml.safe_load(Path(path).read_text())


def validate(config: dict, schema: dict | str | Path) -> dict:
    """Validate ``config`` against ``schema``; return a copy with defaults filled in.

    Raises MotifpipeError with one line naming the offending key on the first error.
    """
    if not isinstance(schema, dict):
        schema = load_schema(schema)
    if not isinstance(config, dict):
        raise MotifpipeError("config: expected a mapping at the top level")
    filled = copy.deepcopy(config)
    error = jsonschema.exceptions.best_match(_Validator(schema).iter_errors(filled))
    if error is not None:
        raise MotifpipeError(format_error(error))
    # A second pass fills defaults of objects that were themselves defaulted.
    for _ in _Validator(schema).iter_errors(filled):
        pass
    _check_tasks(filled)
    _check_arm_train(filled, schema)
    return filled


def format_error(error: jsonschema.ValidationError) -> str:
    """One line: ``config key <dotted.path>: <what was expected>``."""
    where = ".".join(str(p) for p in error.absolute_path) or "<top level>"
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        key = extra[0] if extra else "?"
        hint = difflib.get_close_matches(key, allowed, n=1)
        did_you_mean = f" (did you mean {hint[0]!r}?)" if hint else ""
        prefix = f"{where}." if error.absolute_path else ""
        return (
            f"config key {prefix}{key}: unknown key{did_you_mean}; "
            f"allowed keys here: {', '.join(allowed)}"
        )
    if error.validator == "required":
        return f"config key {where}: {error.message}"
    if error.validator == "enum":
        return f"config key {where}: {error.instance!r} is not one of {error.validator_value}"
    return f"config key {where}: {error.message}"


def _check_tasks(config: dict) -> None:
    """Generator-specific checks of each task's ``params`` (the schema cannot name them)."""
    from motifpipe import data

    config["tasks"] = {
        name: data.check_task(name, task) for name, task in config["tasks"].items()
    }


def _check_arm_train(config: dict, schema: dict) -> None:
    """Each arm's overrides, merged over ``train:``, must satisfy the ``train:`` schema."""
    train_schema = schema["properties"]["train"]
    for arm, override in config.get("arm_train", {}).items():
        merged = {**config["train"], **override}
        error = jsonschema.exceptions.best_match(_Validator(train_schema).iter_errors(merged))
        if error is not None:
            error.path.appendleft(arm)
            error.path.appendleft("arm_train")
            raise MotifpipeError(format_error(error))


def train_config(config: dict, arm: str) -> dict:
    """The ``train:`` settings of one arm: ``train`` with ``arm_train[arm]`` on top."""
    return {**config["train"], **config.get("arm_train", {}).get(arm, {})}


def sizes(task: dict) -> list[int]:
    """The sample sizes a task entry sweeps: ``n`` as a list."""
    n = task["n"]
    return list(n) if isinstance(n, list) else [n]


def jobs(config: dict) -> list[dict]:
    """Every (task, n, seed) combination of a validated config, in a stable order."""
    out = []
    for name, task in config["tasks"].items():
        for n, seed in itertools.product(sizes(task), config["seeds"]):
            out.append({"task": name, "n": n, "seed": seed})
    return out


def experiment_name(config: dict) -> str:
    """The MLflow experiment a study logs to."""
    return config["tracking"].get("experiment") or f"motifpipe/{config['study']}"
