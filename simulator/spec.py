"""The Bot API's machine-readable description (``spec/api.json``), and what follows from it.

Every method in the spec is known to the simulator; its fields (names, types, required flags)
drive parameter parsing, so no method's parameter list is written by hand. Parsing follows
the official server: an empty value is an absent one, unknown parameters are ignored, form
values arrive as strings (objects and arrays JSON-serialized, booleans ``true``/``false``),
and a JSON body may carry native values or the same strings.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tgbroadcast.simulator.envelope import BotApiError, bad_request
from tgbroadcast.simulator.files import Upload

SPEC_PATH = Path(__file__).with_name("spec") / "api.json"

_INTEGER = re.compile(r"[+-]?\d+")
_ARRAY_OF = "Array of "
ATTACH_PREFIX = "attach://"

# How the official server names a parameter in "can't parse ... JSON object".
_JSON_NAMES = {
    "reply_markup": "reply keyboard markup",
    "entities": "entities",
    "caption_entities": "entities",
}


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One parameter of a method (or field of a type): ``types`` is a union."""

    name: str
    types: tuple[str, ...]
    required: bool

    @property
    def takes_file(self) -> bool:
        return "InputFile" in self.types


@dataclass(frozen=True, slots=True)
class MethodSpec:
    """One Bot API method as the spec describes it."""

    name: str
    fields: tuple[FieldSpec, ...]
    returns: tuple[str, ...]

    def field(self, name: str) -> FieldSpec | None:
        return next((f for f in self.fields if f.name == name), None)


@dataclass(frozen=True, slots=True)
class TypeSpec:
    """One Bot API type; ``subtypes`` is set for unions such as ``InputMedia``."""

    name: str
    fields: tuple[FieldSpec, ...]
    subtypes: tuple[str, ...]


def _fields(raw: list[dict[str, Any]] | None) -> tuple[FieldSpec, ...]:
    return tuple(
        FieldSpec(name=f["name"], types=tuple(f["types"]), required=bool(f["required"]))
        for f in raw or ()
    )


class Spec:
    """The loaded spec. Method lookup is case-insensitive, as on the real server."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self.version: str = data["version"]
        self.methods: dict[str, MethodSpec] = {
            name.lower(): MethodSpec(
                name=name, fields=_fields(m.get("fields")), returns=tuple(m["returns"])
            )
            for name, m in data["methods"].items()
        }
        self.types: dict[str, TypeSpec] = {
            name: TypeSpec(
                name=name, fields=_fields(t.get("fields")), subtypes=tuple(t.get("subtypes", ()))
            )
            for name, t in data["types"].items()
        }

    @classmethod
    def load(cls, path: Path = SPEC_PATH) -> Spec:
        return cls(json.loads(path.read_text(encoding="utf-8")))

    def method(self, name: str) -> MethodSpec | None:
        return self.methods.get(name.lower())

    # ---- parsing parameters ----

    def parse(
        self, method: MethodSpec, raw: Mapping[str, Any], uploads: Mapping[str, Upload]
    ) -> dict[str, Any]:
        """The method's parameters, typed per the spec. Raises :class:`BotApiError` (400).

        A file parameter is an :class:`Upload` (a part named like it, or ``attach://<part>``)
        or a string (a URL or file_id); ``attach://`` to a missing part leaves it absent.
        Required parameters are not checked here: their texts depend on the method.
        """
        params: dict[str, Any] = {}
        for spec_field in method.fields:
            if spec_field.takes_file and spec_field.name in uploads:
                params[spec_field.name] = uploads[spec_field.name]
                continue
            value = raw.get(spec_field.name)
            if value is None or value == "":
                continue
            if spec_field.takes_file and isinstance(value, str) and value.startswith(ATTACH_PREFIX):
                upload = uploads.get(value.removeprefix(ATTACH_PREFIX))
                if upload is not None:
                    params[spec_field.name] = upload
                continue
            params[spec_field.name] = self._coerce(spec_field, value)
        return params

    def _coerce(self, spec_field: FieldSpec, value: Any) -> Any:
        failure: BotApiError | None = None
        for type_name in spec_field.types:
            try:
                return self._coerce_one(spec_field.name, type_name, value)
            except BotApiError as exc:
                failure = failure or exc
        assert failure is not None
        raise failure

    def _coerce_one(self, name: str, type_name: str, value: Any) -> Any:
        if type_name == "Integer":
            if isinstance(value, int) and not isinstance(value, bool):
                return value
            if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
                return int(value)
            raise bad_request(f'field "{name}" must be a valid Number')
        if type_name == "Float":
            number = _as_float(value)
            if number is None:
                raise bad_request(f'field "{name}" must be a valid Number')
            return number
        if type_name == "Boolean":
            flag = _as_bool(value)
            if flag is None:
                raise bad_request(f'field "{name}" must be of type Boolean')
            return flag
        if type_name == "String":
            if isinstance(value, str):
                return value
            if isinstance(value, int | float) and not isinstance(value, bool):
                return str(value)
            raise bad_request(f'field "{name}" must be of type String')
        if type_name == "InputFile":
            raise bad_request(f'field "{name}" must be a file')
        if type_name.startswith(_ARRAY_OF):
            items = _decode_json(name, value)
            if not isinstance(items, list):
                raise _cant_parse(name)
            item_type = type_name.removeprefix(_ARRAY_OF)
            return [self._coerce_item(name, item_type, item) for item in items]
        if type_name in self.types:
            obj = _decode_json(name, value)
            if not isinstance(obj, dict):
                raise _cant_parse(name)
            return obj
        raise bad_request(f'field "{name}" has an unsupported type')

    def _coerce_item(self, name: str, item_type: str, item: Any) -> Any:
        if item_type in ("Integer", "Float", "Boolean", "String") or item_type.startswith(
            _ARRAY_OF
        ):
            return self._coerce_one(name, item_type, item)
        if not isinstance(item, dict):
            raise _cant_parse(name)
        return item

    # ---- checking objects against the spec (used by tests and by the simulator's own checks)

    def problems(self, type_name: str, value: Any, path: str = "") -> list[str]:
        """Where ``value`` breaks the spec of ``type_name``: missing required fields, unknown
        fields, wrong primitive types. Empty when it conforms."""
        where = path or type_name
        if type_name.startswith(_ARRAY_OF):
            if not isinstance(value, list):
                return [f"{where}: expected an array"]
            inner = type_name.removeprefix(_ARRAY_OF)
            return [
                p for i, v in enumerate(value) for p in self.problems(inner, v, f"{where}[{i}]")
            ]
        primitive = _PRIMITIVES.get(type_name)
        if primitive is not None:
            return [] if primitive(value) else [f"{where}: expected {type_name}"]
        spec = self.types.get(type_name)
        if spec is None:
            return [f"{where}: unknown type {type_name}"]
        if not isinstance(value, dict):
            return [f"{where}: expected an object"]
        if spec.subtypes and not spec.fields:
            return []
        known = {f.name: f for f in spec.fields}
        found = [f"{where}.{key}: not a field of {type_name}" for key in value if key not in known]
        for spec_field in spec.fields:
            if spec_field.name not in value:
                if spec_field.required:
                    found.append(f"{where}.{spec_field.name}: required")
                continue
            options = [
                self.problems(t, value[spec_field.name], f"{where}.{spec_field.name}")
                for t in spec_field.types
            ]
            if all(options):
                found.extend(options[0])
        return found


def _as_float(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def _as_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("true", "1"):
            return True
        if lowered in ("false", "0"):
            return False
    return None


def _cant_parse(name: str) -> BotApiError:
    human = _JSON_NAMES.get(name, name.replace("_", " "))
    return bad_request(f"can't parse {human} JSON object")


def _decode_json(name: str, value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        raise _cant_parse(name) from None


_PRIMITIVES = {
    "Integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "Float": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "Boolean": lambda v: isinstance(v, bool),
    "String": lambda v: isinstance(v, str),
    "True": lambda v: v is True,
}


@functools.cache
def default_spec() -> Spec:
    """The bundled Bot API spec, loaded once per process."""
    return Spec.load()
