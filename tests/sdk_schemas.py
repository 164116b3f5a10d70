"""Check a message against the ``smallestai`` SDK's own request model, strictly.

The SDK's models accept extra fields and type enums as ``Union[Literal[...], Any]`` (open for new
values), so plain validation would pass almost anything. Here a message passes only if every key is a
field (or alias) of the model, pydantic validates it, and every enum-typed value is one the SDK lists.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any

import pydantic


def _literal_values(annotation: Any) -> tuple[Any, ...] | None:
    if typing.get_origin(annotation) is typing.Literal:
        return typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            values = _literal_values(arg)
            if values is not None:
                return values
    return None


def schema_problems(
    model: type[pydantic.BaseModel], message: Mapping[str, Any], *, allowed_extra: Iterable[str] = ()
) -> list[str]:
    """Everything wrong with ``message`` as a ``model``; empty when it conforms."""
    fields = model.model_fields
    by_wire_name = {info.alias or name: (name, info) for name, info in fields.items()}
    problems = [
        f"{key!r} is not a field of {model.__name__}"
        for key in message
        if key not in by_wire_name and key not in set(allowed_extra)
    ]
    try:
        model.model_validate(dict(message))
    except pydantic.ValidationError as exc:
        problems.append(f"{model.__name__} rejects it: {exc}")
    for key, value in message.items():
        if key not in by_wire_name or value is None:
            continue
        allowed = _literal_values(by_wire_name[key][1].annotation)
        if allowed is not None and value not in allowed:
            problems.append(f"{key}={value!r} is not one of the SDK's values {allowed}")
    return problems
