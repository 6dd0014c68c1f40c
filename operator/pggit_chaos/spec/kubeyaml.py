"""YAML read the way ``kubectl`` reads it, so that a file means the same to the model and the CRD.

Used by :mod:`pggit_chaos.spec.loader` for experiment files. kubectl turns YAML into JSON with
sigs.k8s.io/yaml on go-yaml v2, whose plain scalars differ from PyYAML's YAML 1.1 resolver:
``y``/``n`` are booleans, ``1e9`` and ``08`` are numbers, ``1:30`` is text, not 90; map keys
become strings (``1`` -> ``"1"``, ``y`` -> ``"true"``). :class:`KubectlLoader` is PyYAML's safe
loader with go-yaml v2's ``resolve`` for untagged plain scalars and sigs.k8s.io/yaml's key
conversion; quoted and explicitly tagged scalars are PyYAML's as before.
"""

from __future__ import annotations

import math
import re
import struct
from decimal import Decimal
from typing import Any

import yaml

__all__ = ["KubectlLoader", "go_scalar", "json_key"]

#: Tag given to untagged plain scalars; constructed by :func:`go_scalar`.
_PLAIN = "tag:pggit-chaos,2026:plain"
#: go-yaml v2's ``resolveMap``: plain scalars looked up as a whole.
_WORDS: dict[str, Any] = {
    **dict.fromkeys(["y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON"],
                    True),
    **dict.fromkeys(["n", "N", "no", "No", "NO", "false", "False", "FALSE", "off", "Off",
                     "OFF"], False),
    **dict.fromkeys(["", "~", "null", "Null", "NULL"], None),
    **dict.fromkeys([".nan", ".NaN", ".NAN"], math.nan),
    **dict.fromkeys([".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF"], math.inf),
    **dict.fromkeys(["-.inf", "-.Inf", "-.INF"], -math.inf),
}
_YAML_STYLE_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
_DOT_FLOAT = re.compile(r"\.[0-9]+([eE][-+]?[0-9]+)?")
_GO_INT = re.compile(r"([-+]?)(0[xX][0-9a-fA-F]+|0[oO][0-7]+|0[bB][01]+|0[0-7]*|[1-9][0-9]*)")
_INT64 = 2**63
_UINT64 = 2**64


def _go_float(text: str) -> float | None:
    """``strconv.ParseFloat`` of text already in decimal form; ``None`` where Go errs."""
    value = float(text)
    return None if math.isinf(value) else value  # out of range: an error in Go


def _go_int(text: str) -> int | None:
    """``strconv.ParseInt(text, 0, 64)``, falling back to ``ParseUint``; ``None`` on error."""
    match = _GO_INT.fullmatch(text)
    if match is None:
        return None
    sign, digits = match.groups()
    lowered = digits.lower()
    if lowered.startswith("0x"):
        value = int(lowered[2:], 16)
    elif lowered.startswith("0o"):
        value = int(lowered[2:], 8)
    elif lowered.startswith("0b"):
        value = int(lowered[2:], 2)
    elif len(digits) > 1 and digits.startswith("0"):
        value = int(digits[1:], 8)
    else:
        value = int(digits)
    if sign == "-":
        return -value if value <= _INT64 else None
    if value < _INT64 or (not sign and value < _UINT64):
        return value
    return None


def go_scalar(text: str) -> Any:
    """A plain (unquoted, untagged) scalar as go-yaml v2 resolves it for kubectl."""
    if text in _WORDS:
        return _WORDS[text]
    first = text[:1]
    if first == ".":
        return _go_float(text) if _DOT_FLOAT.fullmatch(text) else text
    if not first or first not in "+-0123456789":
        return text
    if re.match(r"[0-9]{4}-", text):
        return text  # a timestamp stays text when decoded into interface{} (go-yaml v2)
    plain = text.replace("_", "")
    integer = _go_int(plain)
    if integer is not None:
        return integer
    if _YAML_STYLE_FLOAT.fullmatch(plain):
        number = _go_float(plain)
        if number is not None:
            return number
    return text


def _float32_g(value: float) -> str:
    """``strconv.FormatFloat(value, 'g', -1, 32)``: the shortest digits of the float32, in
    exponent form when the exponent is below -4 or at least 6 (go-yaml's spelling of the
    infinities and NaN)."""
    if math.isnan(value):
        return ".nan"
    if math.isinf(value):
        return ".inf" if value > 0 else "-.inf"
    single = struct.unpack("f", struct.pack("f", value))[0]
    digits = f"{single:.8e}"
    for precision in range(1, 10):
        digits = f"{single:.{precision - 1}e}"
        if struct.unpack("f", struct.pack("f", float(digits)))[0] == single:
            break
    mantissa, exponent_text = digits.split("e")
    exponent = int(exponent_text)
    if "." in mantissa:
        mantissa = mantissa.rstrip("0").rstrip(".")
    if exponent < -4 or exponent >= 6:
        return f"{mantissa}e{'-' if exponent < 0 else '+'}{abs(exponent):02d}"
    return format(Decimal(f"{mantissa}e{exponent}"), "f")


def json_key(key: Any) -> str:
    """A map key as sigs.k8s.io/yaml writes it into JSON (a null key is an error there)."""
    if isinstance(key, str):
        return key
    if isinstance(key, bool):
        return "true" if key else "false"
    if isinstance(key, int):
        return str(key)
    if isinstance(key, float):
        return _float32_g(key)
    raise ValueError(f"unsupported map key: {key!r} (kubectl cannot convert it to JSON)")


class KubectlLoader(yaml.SafeLoader):
    """PyYAML's safe loader with kubectl's reading of plain scalars and map keys."""

    def resolve(self, kind: type[yaml.Node], value: str, implicit: tuple[bool, bool]) -> str:
        if kind is yaml.ScalarNode and implicit[0] and value != "<<":  # (a merge key stays)
            return _PLAIN
        return str(super().resolve(kind, value, implicit))  # type: ignore[no-untyped-call]

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        # Keys become strings before they meet in a dict: True and 1 are one key in Python,
        # "true" and "1" in JSON.
        self.flatten_mapping(node)
        mapping: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                name = json_key(key)
            except ValueError as error:
                raise yaml.constructor.ConstructorError(
                    None, None, str(error), key_node.start_mark
                ) from None
            mapping[name] = self.construct_object(value_node, deep=deep)
        return mapping


def _construct_plain(loader: KubectlLoader, node: yaml.ScalarNode) -> Any:
    return go_scalar(str(loader.construct_scalar(node)))


KubectlLoader.add_constructor(_PLAIN, _construct_plain)
