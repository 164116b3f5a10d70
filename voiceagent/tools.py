"""Tool definitions: ``@tool`` turns a typed Python function into an OpenAI function-calling schema.

The schema is built from the type hints and only the FIRST line of the docstring: tool schemas are part
of the cached prompt prefix, so they are kept short and byte-stable (keys are inserted in a fixed order,
properties in parameter order, nothing depends on dict or set iteration of the runtime).

Each parameter also gets a converter used by ``Tool.bind`` to check (and lightly coerce) the arguments the
model sent before the function is called. Coercion is deliberately minimal: an int is accepted for a float
and an integral float (``3.0``) for an int; strings are never parsed into numbers.
"""

from __future__ import annotations

import enum
import inspect
import re
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import (
    Annotated,
    Any,
    Literal,
    Union,
    get_args,
    get_origin,
    get_type_hints,
    is_typeddict,
    overload,
)

from voiceagent.errors import ToolDefinitionError

OnCancel = Literal["cancel", "finish"]

# OpenAI rejects function names outside this pattern.
_NAME_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")

Converter = Callable[[Any, str], Any]
"""Checks one JSON value (the str is its path, e.g. ``city`` or ``stops[2]``) and returns the Python value."""


class ToolArgumentError(ValueError):
    """The model's arguments do not fit the tool's parameters. The message is meant for the model."""


@dataclass(frozen=True, slots=True)
class ToolParam:
    name: str
    required: bool
    default: Any
    convert: Converter = field(repr=False, compare=False)


@dataclass(frozen=True, slots=True, eq=False)
class Tool:
    """A function the model may call. Build it with ``@tool``; calling the Tool calls the function."""

    name: str
    description: str
    parameters: dict[str, Any]
    fn: Callable[..., Any] = field(repr=False)
    is_async: bool
    timeout: float | None = None
    on_cancel: OnCancel = "cancel"
    params: tuple[ToolParam, ...] = field(default=(), repr=False)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def schema(self) -> dict[str, Any]:
        """The OpenAI ``tools`` entry for this tool."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }

    def bind(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """Check the model's arguments and return the keyword arguments to call ``fn`` with.

        Raises ToolArgumentError listing every problem found (so the model can fix them in one retry).
        """
        problems: list[str] = []
        kwargs: dict[str, Any] = {}
        known = {p.name for p in self.params}
        for param in self.params:
            if param.name not in arguments:
                if param.required:
                    problems.append(f'missing required argument "{param.name}"')
                continue
            try:
                kwargs[param.name] = param.convert(arguments[param.name], param.name)
            except ToolArgumentError as exc:
                problems.append(str(exc))
        extra = [name for name in arguments if name not in known]
        if extra:
            problems.append("unexpected argument(s) " + ", ".join(f'"{n}"' for n in extra))
        if problems:
            raise ToolArgumentError("; ".join(problems))
        return kwargs


def tools_schema(tools: Sequence[Tool]) -> list[dict[str, Any]]:
    """The ``tools`` request parameter for a list of tools, in the given order."""
    return [t.schema() for t in tools]


@overload
def tool(fn: Callable[..., Any], /) -> Tool: ...


@overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    timeout: float | None = None,
    on_cancel: OnCancel = "cancel",
) -> Callable[[Callable[..., Any]], Tool]: ...


def tool(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    timeout: float | None = None,
    on_cancel: OnCancel = "cancel",
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Make a Tool of a function: ``@tool``, or ``@tool(name=, description=, timeout=, on_cancel=)``.

    ``timeout`` (seconds) overrides the runner's default. ``on_cancel`` says what a cancelled turn (barge-in)
    does to a running call: ``"cancel"`` stops it, ``"finish"`` lets it run to the end so its result is kept.
    """

    def build(f: Callable[..., Any]) -> Tool:
        return _build_tool(f, name=name, description=description, timeout=timeout, on_cancel=on_cancel)

    if fn is not None:
        return build(fn)
    return build


def _build_tool(
    fn: Callable[..., Any],
    *,
    name: str | None,
    description: str | None,
    timeout: float | None,
    on_cancel: str,
) -> Tool:
    if not callable(fn):
        raise ToolDefinitionError(f"@tool needs a function, got {fn!r}")
    tool_name = name if name is not None else getattr(fn, "__name__", "")
    if not _NAME_RE.match(tool_name):
        raise ToolDefinitionError(
            f"tool name {tool_name!r} is invalid: use 1-64 letters, digits, '_' or '-' (pass name=...)"
        )
    if on_cancel not in ("cancel", "finish"):
        raise ToolDefinitionError(
            f'tool {tool_name}: on_cancel must be "cancel" or "finish", got {on_cancel!r}'
        )
    if timeout is not None and not timeout > 0:
        raise ToolDefinitionError(f"tool {tool_name}: timeout must be a positive number of seconds")
    if description is None:
        description = _first_doc_line(fn)
    if not description:
        raise ToolDefinitionError(
            f"tool {tool_name} has no description: add a docstring or pass description="
        )
    if inspect.isasyncgenfunction(fn) or inspect.isgeneratorfunction(fn):
        raise ToolDefinitionError(f"tool {tool_name}: generator functions cannot be tools")

    parameters, params = _parameters_schema(fn, tool_name)
    return Tool(
        name=tool_name,
        description=description,
        parameters=parameters,
        fn=fn,
        is_async=inspect.iscoroutinefunction(fn),
        timeout=timeout,
        on_cancel="finish" if on_cancel == "finish" else "cancel",
        params=params,
    )


def _first_doc_line(fn: Callable[..., Any]) -> str:
    doc = inspect.getdoc(fn) or ""
    for line in doc.splitlines():
        if line.strip():
            return line.strip()
    return ""


def _parameters_schema(
    fn: Callable[..., Any], tool_name: str
) -> tuple[dict[str, Any], tuple[ToolParam, ...]]:
    try:
        hints = _parameter_hints(fn)
    except Exception as exc:  # an unresolvable forward reference, usually
        raise ToolDefinitionError(f"tool {tool_name}: cannot resolve type hints: {exc}") from exc
    properties: dict[str, Any] = {}
    required: list[str] = []
    params: list[ToolParam] = []
    for p in inspect.signature(fn).parameters.values():
        where = f'tool {tool_name}, parameter "{p.name}"'
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise ToolDefinitionError(f"{where}: *args/**kwargs are not supported")
        if p.kind is p.POSITIONAL_ONLY:
            raise ToolDefinitionError(f"{where}: positional-only parameters are not supported")
        if p.name not in hints:
            raise ToolDefinitionError(f"{where} has no type hint")
        schema, convert = _type_schema(hints[p.name], where)
        properties[p.name] = schema
        has_default = p.default is not inspect.Parameter.empty
        if not has_default:
            required.append(p.name)
        params.append(ToolParam(p.name, not has_default, p.default if has_default else None, convert))
    parameters = {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }
    return parameters, tuple(params)


def _no_op() -> None:
    pass


def _parameter_hints(fn: Callable[..., Any]) -> dict[str, Any]:
    """Resolve the parameters' annotations only: the return type is not part of the schema, and may
    name something the function's module cannot resolve (a local class, say)."""
    annotations = {k: v for k, v in inspect.get_annotations(fn).items() if k != "return"}
    holder = types.FunctionType(_no_op.__code__, getattr(fn, "__globals__", {}))
    holder.__annotations__ = annotations
    return get_type_hints(holder, include_extras=True)


_JSON_TYPE_NAMES = {str: "string", bool: "boolean", int: "integer", float: "number"}


def _describe(value: Any) -> str:
    """A short, model-readable rendering of a wrong value (bounded: it goes back into the prompt)."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _type_schema(tp: Any, where: str) -> tuple[dict[str, Any], Converter]:
    """JSON schema and converter for one annotation. Key order is fixed: type, items/enum/..., description."""
    origin = get_origin(tp)

    if origin is Annotated:
        inner, *meta = get_args(tp)
        schema, convert = _type_schema(inner, where)
        descriptions = [m for m in meta if isinstance(m, str)]
        if descriptions:
            schema = {**schema, "description": descriptions[0]}
        return schema, convert

    if origin is Union or origin is types.UnionType:
        members = get_args(tp)
        non_null = [m for m in members if m is not type(None)]
        if len(non_null) != 1 or len(members) != 2:
            raise ToolDefinitionError(
                f"{where}: unions are only supported as Optional[T] / T | None, got {tp!r}"
            )
        schema, convert = _type_schema(non_null[0], where)
        return _nullable(schema), _optional_converter(convert)

    if isinstance(tp, type) and tp in _JSON_TYPE_NAMES:
        return {"type": _JSON_TYPE_NAMES[tp]}, _scalar_converter(tp)

    if origin is Literal:
        values = get_args(tp)
        return _enum_schema(values, where), _literal_converter(values)

    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return _enum_schema(tuple(m.value for m in tp), where), _enum_converter(tp)

    if origin is list:
        (item_tp,) = get_args(tp) or (None,)
        if item_tp is None:
            raise ToolDefinitionError(f"{where}: list needs an item type, e.g. list[str]")
        item_schema, item_convert = _type_schema(item_tp, where)
        return {"type": "array", "items": item_schema}, _list_converter(item_convert)
    if tp is list:
        raise ToolDefinitionError(f"{where}: list needs an item type, e.g. list[str]")

    if origin is dict:
        key_tp, value_tp = get_args(tp)
        if key_tp is not str:
            raise ToolDefinitionError(f"{where}: dict keys must be str, got {key_tp!r}")
        value_schema, value_convert = _type_schema(value_tp, where)
        return {"type": "object", "additionalProperties": value_schema}, _dict_converter(value_convert)
    if tp is dict:
        raise ToolDefinitionError(f"{where}: dict needs key and value types, e.g. dict[str, int]")

    if is_typeddict(tp):
        return _typeddict_schema(tp, where)

    raise ToolDefinitionError(
        f"{where}: unsupported type {getattr(tp, '__name__', tp)!r} (supported: str, int, float, bool, "
        "Literal, Enum, list[T], dict[str, T], TypedDict, Optional[T], Annotated[T, 'description'])"
    )


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    json_type = schema.get("type")
    if isinstance(json_type, str):
        out = {**schema, "type": [json_type, "null"]}
        if "enum" in schema:
            out["enum"] = [*schema["enum"], None]
        return out
    if "enum" in schema:
        return {**schema, "enum": [*schema["enum"], None]}
    return {"anyOf": [schema, {"type": "null"}]}


def _enum_schema(values: tuple[Any, ...], where: str) -> dict[str, Any]:
    if not values:
        raise ToolDefinitionError(f"{where}: an enum needs at least one value")
    kinds = set()
    for v in values:
        if type(v) not in _JSON_TYPE_NAMES:
            raise ToolDefinitionError(f"{where}: enum values must be str, int, float or bool, got {v!r}")
        kinds.add(_JSON_TYPE_NAMES[type(v)])
    if len(kinds) == 1:
        return {"type": kinds.pop(), "enum": list(values)}
    return {"enum": list(values)}


def _scalar_converter(tp: type) -> Converter:
    expected = _JSON_TYPE_NAMES[tp]

    def convert(value: Any, path: str) -> Any:
        # bool is an int subclass in Python but not in JSON: never accept it for a number.
        if tp is bool:
            ok = isinstance(value, bool)
        elif tp is int:
            if isinstance(value, float) and not isinstance(value, bool) and value.is_integer():
                return int(value)
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif tp is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            if ok:
                return float(value)
        else:
            ok = isinstance(value, str)
        if not ok:
            raise ToolArgumentError(
                f'"{path}" must be {_article(expected)}, got {_json_kind(value)} {_describe(value)}'
            )
        return value

    return convert


def _article(json_type: str) -> str:
    return f"an {json_type}" if json_type[0] in "aeiou" else f"a {json_type}"


def _literal_converter(values: tuple[Any, ...]) -> Converter:
    def convert(value: Any, path: str) -> Any:
        for v in values:
            # compare types too: True == 1 in Python but not in JSON
            if type(v) is type(value) and v == value:
                return v
        options = ", ".join(_describe(v) for v in values)
        raise ToolArgumentError(f'"{path}" must be one of {options}, got {_describe(value)}')

    return convert


def _enum_converter(enum_type: type[enum.Enum]) -> Converter:
    members = tuple(enum_type)
    check = _literal_converter(tuple(m.value for m in members))

    def convert(value: Any, path: str) -> Any:
        return enum_type(check(value, path))

    return convert


def _optional_converter(inner: Converter) -> Converter:
    def convert(value: Any, path: str) -> Any:
        return None if value is None else inner(value, path)

    return convert


def _list_converter(item: Converter) -> Converter:
    def convert(value: Any, path: str) -> Any:
        if not isinstance(value, list):
            raise ToolArgumentError(f'"{path}" must be an array, got {_json_kind(value)} {_describe(value)}')
        return [item(v, f"{path}[{i}]") for i, v in enumerate(value)]

    return convert


def _dict_converter(value_convert: Converter) -> Converter:
    def convert(value: Any, path: str) -> Any:
        if not isinstance(value, dict):
            raise ToolArgumentError(f'"{path}" must be an object, got {_json_kind(value)} {_describe(value)}')
        return {k: value_convert(v, f"{path}.{k}") for k, v in value.items()}

    return convert


def _typeddict_schema(td: Any, where: str) -> tuple[dict[str, Any], Converter]:
    hints = get_type_hints(td, include_extras=True)
    required_keys: frozenset[str] = td.__required_keys__
    properties: dict[str, Any] = {}
    converters: dict[str, Converter] = {}
    for key, key_tp in hints.items():
        properties[key], converters[key] = _type_schema(key_tp, f"{where}, key {key!r}")
    required = [k for k in hints if k in required_keys]
    schema = {"type": "object", "properties": properties, "required": required, "additionalProperties": False}

    def convert(value: Any, path: str) -> Any:
        if not isinstance(value, dict):
            raise ToolArgumentError(f'"{path}" must be an object, got {_json_kind(value)} {_describe(value)}')
        missing = [k for k in required if k not in value]
        extra = [k for k in value if k not in converters]
        if missing or extra:
            parts = [f'"{path}.{k}" is missing' for k in missing]
            parts += [f'"{path}.{k}" is unexpected' for k in extra]
            raise ToolArgumentError("; ".join(parts))
        return {k: converters[k](v, f"{path}.{k}") for k, v in value.items()}

    return schema, convert
