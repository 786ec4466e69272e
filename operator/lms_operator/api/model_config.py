"""`spec.serving.config`: a partial Triton ModelConfig in YAML, checked against Triton's own schema.

The CRD's schema for the field is derived from the ModelConfig protobuf descriptor, so the API
server refuses a misspelt field (kubectl's strict field validation) as `lms validate` does, and
`parse_override` then reads it with protobuf's JSON parser, which catches what a structural schema
cannot (a oneof set twice, a wrong enum value inside a map).
"""
from __future__ import annotations

from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from tritonclient.grpc import model_config_pb2 as pb


OPERATOR_OWNED = ("name", "platform", "backend", "runtime", "max_batch_size", "input", "output", "batch_input",
                  "batch_output", "ensemble_scheduling")
"""Fields that come from the model, its template or the spec's own fields, never from an override."""

MAX_STRING, MAX_ITEMS = 4096, 64
"""Bounds on every string, list and map of an override (the API server prices CEL rules by them)."""
_NUMBER = (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT)
_TEXT = (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES)


def _single(field: FieldDescriptor) -> dict[str, Any]:
    if field.type == FieldDescriptor.TYPE_ENUM:
        return {"type": "string", "enum": [value.name for value in field.enum_type.values], "maxLength": 64}
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return message_schema(field.message_type)
    if field.type in _NUMBER:
        return {"type": "number"}
    if field.type == FieldDescriptor.TYPE_BOOL:
        return {"type": "boolean"}
    if field.type in _TEXT:
        return {"type": "string", "maxLength": MAX_STRING}
    return {"type": "integer"}


def _field(field: FieldDescriptor) -> dict[str, Any]:
    if field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type.GetOptions().map_entry:
        return {"type": "object", "additionalProperties": _single(field.message_type.fields_by_name["value"]),
                "maxProperties": MAX_ITEMS}
    single = _single(field)
    return {"type": "array", "items": single, "maxItems": MAX_ITEMS} if field.is_repeated else single


def message_schema(descriptor: Descriptor) -> dict[str, Any]:
    """The OpenAPI schema of a protobuf message in its JSON form with the .proto field names."""
    return {"type": "object", "properties": {field.name: _field(field) for field in descriptor.fields}}


def _opaque(field: FieldDescriptor) -> dict[str, Any]:
    """A field's type without its content's schema: enough for a CEL rule to see that it is set."""
    item = ({"type": "object", "x-kubernetes-preserve-unknown-fields": True}
            if field.type == FieldDescriptor.TYPE_MESSAGE else _single(field))
    return {"type": "array", "items": item, "maxItems": MAX_ITEMS} if field.is_repeated else item


def override_schema(description: str) -> dict[str, Any]:
    """ModelConfig without the operator's fields: each of those is declared only to be refused by name."""
    schema = message_schema(pb.ModelConfig.DESCRIPTOR)
    rules = []
    for name in OPERATOR_OWNED:
        schema["properties"][name] = _opaque(pb.ModelConfig.DESCRIPTOR.fields_by_name[name])
        rules.append({"rule": f"!has(self.{name})", "fieldPath": f".{name}",
                      "message": f"{name} is set by the operator (from the model, the template or the spec's own "
                                 "fields), not by an override"})
    schema["description"] = description
    schema["x-kubernetes-validations"] = rules
    return schema


def parse_override(raw: dict[str, Any] | None, path: str = "spec.serving.config") -> pb.ModelConfig | None:
    """The override as a ModelConfig message; raises ValueError naming `path` when protobuf refuses it."""
    if not raw:
        return None
    try:
        return json_format.ParseDict(raw, pb.ModelConfig(), ignore_unknown_fields=False)
    except json_format.ParseError as exc:
        raise ValueError(f"{path}: not a valid Triton ModelConfig: {exc}") from None

