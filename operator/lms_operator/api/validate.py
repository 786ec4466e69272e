"""Validate and default a document against the OpenAPI subset the CRD uses.

Mirrors what the API server does with a structural schema: defaults first
(nested defaults inside a defaulted parent too), then types, bounds, enums,
patterns and lengths, then the x-kubernetes-validations CEL rules, evaluated
with a real CEL interpreter. Every problem carries its field path.
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any

import cel

from lms_operator.api.forms import PATTERN_WORDS
from lms_operator.api.schema import Schema


@dataclass(frozen=True)
class Problem:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def apply_defaults(schema: Schema, value: Any) -> Any:
    """Return a copy of ``value`` with the schema's defaults filled in."""
    value = copy.deepcopy(value)
    return _default(schema, value)


def _default(schema: Schema, value: Any) -> Any:
    if schema.get("type") == "object" and isinstance(value, dict):
        for key, sub in schema.get("properties", {}).items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            if key in value:
                value[key] = _default(sub, value[key])
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key in value:
                value[key] = _default(extra, value[key])
    elif schema.get("type") == "array" and isinstance(value, list):
        return [_default(schema["items"], item) for item in value]
    return value


def validate(schema: Schema, value: Any, path: str) -> list[Problem]:
    """All problems of an already-defaulted ``value``; CEL rules run only on well-typed objects."""
    problems = _check(schema, value, path)
    if not problems:
        problems = _rules(schema, value, path)
    return problems


_TYPE_NAMES = {"object": dict, "array": list, "string": str, "boolean": bool}


def _type_ok(expected: str, value: Any) -> bool:
    if expected == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if expected == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, _TYPE_NAMES[expected])


def _describe(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer",
            float: "number", type(None): "null"}.get(type(value), type(value).__name__)


def _check(schema: Schema, value: Any, path: str) -> list[Problem]:
    expected = schema.get("type")
    if expected and not _type_ok(expected, value):
        return [Problem(path, f"must be {'an' if expected[0] in 'aeiou' else 'a'} {expected}, got {_describe(value)}")]
    problems: list[Problem] = []
    if "enum" in schema and value not in schema["enum"]:
        allowed = ", ".join(schema["enum"])
        problems.append(Problem(path, f"must be one of {allowed}, got {value!r}"))
    if expected in ("integer", "number"):
        problems += _bounds(schema, value, path)
    if expected == "string":
        if len(value) > schema.get("maxLength", 1 << 30):
            problems.append(Problem(path, f"must be at most {schema['maxLength']} characters, got {len(value)}"))
        if len(value) < schema.get("minLength", 0):
            problems.append(Problem(path, f"must be at least {schema['minLength']} characters"))
        if "pattern" in schema and not re.search(schema["pattern"], value):
            words = PATTERN_WORDS.get(schema["pattern"], "is not in the allowed form")
            problems.append(Problem(path, f"{words}, got {shown(value)}"))
    if expected == "array":
        if len(value) > schema.get("maxItems", 1 << 30):
            problems.append(Problem(path, f"must have at most {schema['maxItems']} items, got {len(value)}"))
        for index, item in enumerate(value):
            problems += _check(schema["items"], item, f"{path}[{index}]")
    if expected == "object":
        problems += _check_object(schema, value, path)
    return problems


def shown(value: str, limit: int = 80) -> str:
    """A value as a message quotes it: escaped (a newline stays on its line) and cut to `limit` characters."""
    return repr(value) if len(value) <= limit else f"{value[:limit]!r}... ({len(value)} characters)"


def _bounds(schema: Schema, value: float, path: str) -> list[Problem]:
    if "minimum" in schema:
        low, exclusive = schema["minimum"], schema.get("exclusiveMinimum", False)
        if value < low or (exclusive and value == low):
            return [Problem(path, f"must be {'>' if exclusive else '>='} {low}, got {value}")]
    if "maximum" in schema:
        high, exclusive = schema["maximum"], schema.get("exclusiveMaximum", False)
        if value > high or (exclusive and value == high):
            return [Problem(path, f"must be {'<' if exclusive else '<='} {high}, got {value}")]
    return []


def _check_object(schema: Schema, value: dict[str, Any], path: str) -> list[Problem]:
    problems = [Problem(f"{path}.{key}", "is required") for key in schema.get("required", []) if key not in value]
    properties = schema.get("properties")
    extra = schema.get("additionalProperties")
    if len(value) > schema.get("maxProperties", 1 << 30):
        problems.append(Problem(path, f"must have at most {schema['maxProperties']} entries"))
    for key, item in value.items():
        if properties is not None and key in properties:
            problems += _check(properties[key], item, f"{path}.{key}")
        elif isinstance(extra, dict):
            problems += _check(extra, item, f"{path}.{key}")
        elif not schema.get("x-kubernetes-preserve-unknown-fields"):
            known = ", ".join(sorted(properties or {}))
            problems.append(Problem(f"{path}.{key}", f"unknown field (known fields: {known})"))
    return problems


def _rules(schema: Schema, value: Any, path: str) -> list[Problem]:
    """Evaluate CEL rules bottom-up, as the API server reports them."""
    problems: list[Problem] = []
    if schema.get("type") == "object" and isinstance(value, dict):
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                problems += _rules(sub, value[key], f"{path}.{key}")
    elif schema.get("type") == "array" and isinstance(value, list):
        for index, item in enumerate(value):
            problems += _rules(schema["items"], item, f"{path}[{index}]")
    for entry in schema.get("x-kubernetes-validations", []):
        if not cel.evaluate(entry["rule"], {"self": value}):
            problems.append(Problem(path + entry.get("fieldPath", ""), entry["message"]))
    return problems
