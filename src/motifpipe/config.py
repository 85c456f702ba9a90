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
    _check_expanded(filled, schema)
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
    if "propertyNames" in error.schema_path:
        return (f"config key {where}: key {error.instance!r} is not allowed here "
                f"(keys must match {error.validator_value})")
    if error.validator == "maxProperties":
        return (f"config key {where}: at most {error.validator_value} key(s) allowed, "
                f"got {', '.join(map(str, error.instance))}")
    if error.validator == "required":
        return f"config key {where}: {error.message}"
    if error.validator == "enum":
        return f"config key {where}: {error.instance!r} is not one of {error.validator_value}"
    return f"config key {where}: {error.message}"


def _check_tasks(config: dict) -> None:
    """Generator-specific checks of each task's ``params`` (the schema cannot name them)."""
    from motifpipe import data

    for name, task in config["tasks"].items():
        extras = {k: task[k] for k in _TASK_EXTRAS if k in task}
        data_part = {k: v for k, v in task.items() if k not in _TASK_EXTRAS}
        config["tasks"][name] = data.check_task(name, data_part) | extras


def _check_expanded(config: dict, schema: dict) -> None:
    """Every task a sweep expands to must be valid data, with a valid merged baseline."""
    from motifpipe import data

    baseline_schema = schema["properties"]["baseline"]
    expanded = expand_tasks(config)
    for name, spec in expanded.items():
        try:
            data.check_task(name, spec["task"])
        except MotifpipeError as exc:
            if not spec["sweep"]:
                raise
            (key, value), = spec["sweep"].items()
            raise MotifpipeError(f"config key tasks.{spec['family']}.sweep.{key}: "
                                 f"value {value!r} is invalid: {exc}") from None
        error = jsonschema.exceptions.best_match(
            _Validator(baseline_schema).iter_errors(spec["baseline"]))
        if error is not None:
            error.path.extendleft(["baseline", spec["family"], "tasks"])
            raise MotifpipeError(format_error(error))
    if "deepsets" in config["arms"]:
        for name, spec in expanded.items():
            if spec["task"]["generator"] != "invariant":
                raise MotifpipeError(
                    f"config key arms: deepsets needs set-valued inputs, but task {name!r} "
                    f"uses generator {spec['task']['generator']!r} (use 'invariant')")


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


_TASK_EXTRAS = ("baseline", "sweep")  # task keys that are not the data module's
_SCALED_SWEEPS = ("baseline.features", "baseline.centers")  # sizes that grow with n
_REAL_DATA = ("table", "diabetes")  # a file has the rows it has: n is not scaled


def _scaled(value: int, scale: float) -> int:
    return max(1, int(round(value * scale)))


def _variant_name(family: str, key: str, value) -> str:
    """``sphere`` + ``params.D`` = 10 -> ``sphere-D10``; stays a valid wildcard value."""
    text = str(value).replace(".", "p").replace("-", "m")
    text = "".join(c if c.isalnum() or c == "_" else "_" for c in text)
    return f"{family}-{key.rsplit('.', 1)[-1]}{text}"


def expand_tasks(config: dict) -> dict[str, dict]:
    """The tasks a validated config runs, sweeps expanded and ``scale`` applied.

    Returns ``{name: {"task": data-module task (generator, n, noise, params),
    "baseline": merged baseline settings, "family": the task as written,
    "sweep": {} or {key: value}, "data": the task whose data set this one uses}}`` in a
    stable order. A sweep of ``baseline.*`` keys leaves the data unchanged, so all its
    tasks share the data of the first one (one generate job, not one per value).
    """
    scale = config.get("scale", 1)
    out: dict[str, dict] = {}
    for family, entry in config["tasks"].items():
        task = {k: copy.deepcopy(v) for k, v in entry.items() if k not in _TASK_EXTRAS}
        if scale != 1 and task["generator"] not in _REAL_DATA:
            task["n"] = [_scaled(n, scale) for n in sizes(task)]
            task["n"] = task["n"] if isinstance(entry["n"], list) else task["n"][0]
        baseline = {**config.get("baseline", {}), **entry.get("baseline", {})}
        sweep = entry.get("sweep") or {}
        if not sweep:
            out[family] = {"task": task, "baseline": baseline, "family": family, "sweep": {},
                           "data": family}
            continue
        (key, values), = sweep.items()
        first = None
        for value in values:
            if key in _SCALED_SWEEPS and scale != 1:
                value = _scaled(value, scale)
            name = _variant_name(family, key, value)
            if name in out or name in config["tasks"]:
                raise MotifpipeError(f"config key tasks.{family}.sweep: expanded task "
                                     f"name {name!r} is not unique")
            first = first or name
            variant = {"task": copy.deepcopy(task), "baseline": dict(baseline),
                       "family": family, "sweep": {key: value},
                       "data": first if key.startswith("baseline.") else name}
            section, _, leaf = key.partition(".")
            target = {"params": variant["task"].setdefault("params", {}),
                      "baseline": variant["baseline"]}.get(section)
            if target is None:
                variant["task"][key] = value
            else:
                target[leaf] = value
            out[name] = variant
    return out


def jobs(config: dict) -> list[dict]:
    """Every (task, n, seed) combination of a validated config, in a stable order."""
    out = []
    for name, spec in expand_tasks(config).items():
        for n, seed in itertools.product(sizes(spec["task"]), config["seeds"]):
            out.append({"task": name, "n": n, "seed": seed})
    return out


def heatmap_jobs(config: dict, limit: int = 4) -> list[dict]:
    """Jobs whose fits the report draws as 2-D heatmaps: per 2-D task, largest n, first seed."""
    from motifpipe import data

    out = []
    for name, spec in expand_tasks(config).items():
        if data.has_grid(spec["task"]) and len(out) < limit:
            out.append({"task": name, "n": max(sizes(spec["task"])),
                        "seed": config["seeds"][0]})
    return out


def report_figures(config: dict) -> list[str]:
    """The figures a study's report draws, decided by what the study runs."""
    expanded = expand_tasks(config)
    keys = {key for spec in expanded.values() for key in spec["sweep"]}
    wanted = {
        "learning_curves": bool(config["arms"]),
        "final_errors": True,
        "rates": any(len(sizes(spec["task"])) >= 3 for spec in expanded.values()),
        "sweep": bool(keys - {"baseline.features"}),
        "double_descent": "baseline.features" in keys,
        "heatmaps": bool(heatmap_jobs(config)),
    }
    return [name for name, on in wanted.items() if on]


def experiment_name(config: dict) -> str:
    """The MLflow experiment a study logs to."""
    return config["tracking"].get("experiment") or f"motifpipe/{config['study']}"
