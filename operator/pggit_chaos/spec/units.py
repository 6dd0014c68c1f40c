"""Durations and memory quantities as the experiment spec writes them ("250ms", "256Mi").

Used by :mod:`pggit_chaos.spec.model` for field types and by the CRD generator for their
schema. :class:`Duration` is a ``float`` (seconds) that remembers how it was written;
:class:`Quantity` is an ``int`` (bytes) that does the same. Bounds live on the field:
``Annotated[Duration, DurationRange(min="1s", max="1h")]``.

In a spec they accept exactly what the CRD's schema lets the API server accept: a duration
is text only (a number is refused, as is surrounding blank space); a quantity is patterned
text or a whole number (``1.0`` counts as ``1``: kubectl's YAML-to-JSON writes it so), and a
minimum is compared as Kubernetes' CEL ``quantity()`` does (exactly, rounded up to 1e-9).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation, localcontext
from typing import Any, ClassVar

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema

__all__ = [
    "DURATION_PATTERN",
    "QUANTITY_PATTERN",
    "Duration",
    "DurationRange",
    "Quantity",
    "QuantityRange",
    "format_duration",
    "parse_duration",
    "parse_quantity",
    "quantity_value",
]

_NS_PER_UNIT: dict[str, int] = {
    "h": 3_600_000_000_000,
    "m": 60_000_000_000,
    "s": 1_000_000_000,
    "ms": 1_000_000,
    "us": 1_000,
    "µs": 1_000,
    "μs": 1_000,
    "ns": 1,
}
_COMPONENT = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(h|ms|m|s|us|µs|μs|ns)")

#: What a duration string looks like (Go ``time.ParseDuration`` without a sign), for the CRD.
DURATION_PATTERN = r"^(0|(([0-9]+(\.[0-9]*)?|\.[0-9]+)(h|ms|m|s|us|µs|μs|ns))+)$"

DURATION_REASON = "must be a duration like 30s, 2m or 250ms"


def parse_duration(value: object) -> int:
    """Return nanoseconds for ``"1m30s"``-style text or (in code) a number of seconds.

    Raises ``ValueError`` with :data:`DURATION_REASON` for anything else (negative values,
    booleans, unknown units, empty text, blank space around the text).
    """
    if isinstance(value, bool):
        raise ValueError(DURATION_REASON)
    if isinstance(value, Duration):
        return value.nanoseconds
    if isinstance(value, int | float):
        try:
            ns = Decimal(str(value)) * 1_000_000_000
        except InvalidOperation as error:
            raise ValueError(DURATION_REASON) from error
        if not ns.is_finite() or ns < 0:
            raise ValueError(DURATION_REASON)
        return int(ns.to_integral_value())
    if not isinstance(value, str):
        raise ValueError(DURATION_REASON)
    text = value
    if text == "0":
        return 0
    position, total = 0, Decimal(0)
    for match in _COMPONENT.finditer(text):
        if match.start() != position:
            raise ValueError(DURATION_REASON)
        total += Decimal(match.group(1)) * _NS_PER_UNIT[match.group(2)]
        position = match.end()
    if position == 0 or position != len(text):
        raise ValueError(DURATION_REASON)
    return int(total.to_integral_value())


def format_duration(nanoseconds: int) -> str:
    """Canonical text for a duration: ``1h2m3s``, ``250ms``, ``1s500ms``; ``0s`` for zero.

    ``parse_duration(format_duration(n)) == n`` for every ``n >= 0``.
    """
    if nanoseconds < 0:
        raise ValueError("durations are never negative")
    if nanoseconds == 0:
        return "0s"
    parts: list[str] = []
    rest = nanoseconds
    for unit in ("h", "m", "s", "ms", "us", "ns"):
        count, rest = divmod(rest, _NS_PER_UNIT[unit])
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


class _KeepsText:
    """Pydantic glue for numbers that keep the text they were written as (``"250ms"``).

    Subclasses set ``_error`` and ``_reason`` and store the text in ``_text``.
    """

    __slots__ = ()
    _text: str
    _error: ClassVar[str]
    _reason: ClassVar[str]

    @property
    def text(self) -> str:
        """The value as written (numbers get the canonical form)."""
        return self._text

    def __str__(self) -> str:
        return self._text

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._text!r})"

    def __reduce__(self) -> tuple[type[Any], tuple[str]]:
        return (type(self), (self._text,))

    @classmethod
    def _validate(cls, value: object) -> Any:
        if isinstance(value, cls):
            return value
        try:
            return cls(value)  # type: ignore[call-arg]
        except ValueError:
            raise PydanticCustomError(
                cls._error, cls._reason + " (got {value})", {"value": repr(value)}
            ) from None

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: type[Any], handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            cls._validate,
            serialization=core_schema.plain_serializer_function_ser_schema(str, when_used="json"),
        )


class Duration(_KeepsText, float):
    """A duration in seconds (it *is* a ``float``) that keeps its text, e.g. ``"250ms"``.

    ``Duration("1m30s") == 90.0``; ``.seconds`` is the plain float, ``.nanoseconds`` the exact
    integer, ``str()`` the text it was written as (numbers get the canonical form).
    """

    __slots__ = ("_nanoseconds", "_text")
    _nanoseconds: int
    _error = "duration"
    _reason = DURATION_REASON

    def __new__(cls, value: object) -> Duration:
        nanoseconds = parse_duration(value)
        self = super().__new__(cls, nanoseconds / 1_000_000_000)
        self._nanoseconds = nanoseconds
        if isinstance(value, str):
            self._text = value
        elif isinstance(value, Duration):
            self._text = value.text
        else:
            self._text = format_duration(nanoseconds)
        return self

    @classmethod
    def _validate(cls, value: object) -> Any:
        # In a spec a duration is text, as the CRD's schema says (type: string): a number
        # would be refused by the API server, so it is refused here too.
        if not isinstance(value, str | Duration):
            raise PydanticCustomError(
                cls._error, cls._reason + " (got {value})", {"value": repr(value)}
            )
        return super()._validate(value)

    @property
    def seconds(self) -> float:
        """The duration as a plain ``float`` number of seconds."""
        return float(self)

    @property
    def nanoseconds(self) -> int:
        """The exact duration in integer nanoseconds."""
        return self._nanoseconds

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {"type": "string", "pattern": DURATION_PATTERN, "maxLength": 64}


@dataclass(frozen=True)
class DurationRange:
    """Field metadata bounding a :class:`Duration`: ``DurationRange(min="1s", max="1h")``.

    ``min`` is inclusive; ``positive=True`` additionally rejects zero.
    """

    min: str | None = None
    max: str | None = None
    positive: bool = False

    def _check(self, value: Duration) -> Duration:
        if self.positive and value.nanoseconds == 0:
            raise PydanticCustomError("duration_range", "must be longer than 0s")
        if self.min is not None and value.nanoseconds < parse_duration(self.min):
            raise PydanticCustomError(
                "duration_range",
                "must be at least {min} (got {value})",
                {"min": self.min, "value": str(value)},
            )
        if self.max is not None and value.nanoseconds > parse_duration(self.max):
            raise PydanticCustomError(
                "duration_range",
                "must be at most {max} (got {value})",
                {"max": self.max, "value": str(value)},
            )
        return value

    def __get_pydantic_core_schema__(
        self, source: type[Any], handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(self._check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = dict(handler(schema))
        rules: list[dict[str, str]] = []
        if self.positive:
            rules.append(
                {"rule": "duration(self) > duration('0s')", "message": "must be longer than 0s"}
            )
        if self.min is not None:
            rules.append(
                {
                    "rule": f"duration(self) >= duration('{self.min}')",
                    "message": f"must be at least {self.min}",
                }
            )
        if self.max is not None:
            rules.append(
                {
                    "rule": f"duration(self) <= duration('{self.max}')",
                    "message": f"must be at most {self.max}",
                }
            )
        if rules:
            json_schema["x-kubernetes-validations"] = rules
        return json_schema


_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")
_QUANTITY_FACTOR: dict[str, int] = {
    "": 1,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
}
#: What a memory quantity string looks like (a subset of Kubernetes resource.Quantity).
QUANTITY_PATTERN = r"^([0-9]+(\.[0-9]*)?|\.[0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$"
#: The longest quantity text (the CRD's maxLength: it bounds the CEL cost of quantity()).
QUANTITY_MAX_LENGTH = 64
QUANTITY_REASON = "must be a memory quantity like 128Mi, 1Gi or 500M"
_NANO = Decimal("1e-9")


def quantity_value(value: object) -> Decimal:
    """The exact value of a quantity (text or whole number), as Kubernetes parses it.

    ``resource.ParseQuantity`` keeps the exact decimal, rounded up to a multiple of 1e-9:
    ``"16777215.9999999999"`` is 16Mi to the API server's CEL ``quantity()``, so also here.
    Raises ``ValueError`` with :data:`QUANTITY_REASON` for anything the CRD refuses.
    """
    if isinstance(value, bool):
        raise ValueError(QUANTITY_REASON)
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
        value = int(value)  # kubectl's YAML-to-JSON writes 1.0 as 1: the server sees 1
    if isinstance(value, int):
        if not 0 <= value < 2**63:  # beyond int64 the server sees a float, not an integer
            raise ValueError(QUANTITY_REASON)
        return Decimal(value)
    if not isinstance(value, str) or len(value) > QUANTITY_MAX_LENGTH:
        raise ValueError(QUANTITY_REASON)
    match = _QUANTITY.match(value)
    if match is None or value.endswith("\n"):  # ``$`` is the end of the text in RE2
        raise ValueError(QUANTITY_REASON)
    with localcontext(prec=200):  # 64 digits times 2^60, to 1e-9: exact
        exact = Decimal(match.group(1)) * _QUANTITY_FACTOR[match.group(2) or ""]
        if int(exact.as_tuple().exponent) < -9:  # finer than 1e-9
            exact = exact.quantize(_NANO, rounding="ROUND_CEILING")
    if (match.group(2) or "").endswith("i") and exact > 2**63 - 1:
        exact = Decimal(2**63 - 1)  # resource.Quantity caps binary-SI values at int64
    return exact


def parse_quantity(value: object) -> int:
    """Return bytes (rounded up) for ``"256Mi"``-style text or a whole number of bytes."""
    return int(quantity_value(value).to_integral_value(rounding="ROUND_CEILING"))


class Quantity(_KeepsText, int):
    """A memory size in bytes (it *is* an ``int``) that keeps its text, e.g. ``"256Mi"``."""

    _error = "quantity"
    _reason = QUANTITY_REASON

    def __new__(cls, value: object) -> Quantity:
        self = super().__new__(cls, parse_quantity(value))
        self._text = value if isinstance(value, str) else str(int(self))
        return self

    @property
    def exact(self) -> Decimal:
        """The exact value (bytes, possibly fractional) as Kubernetes compares it."""
        return quantity_value(self._text)

    @property
    def bytes(self) -> int:
        """The size as a plain ``int`` number of bytes."""
        return int(self)

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        # Kubernetes writes quantities as int-or-string (controller-gen does the same); the
        # pattern and maxLength bind strings only, the minimum integers only.
        return {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": QUANTITY_PATTERN,
            "maxLength": QUANTITY_MAX_LENGTH,
            "minimum": 0,
            "x-kubernetes-int-or-string": True,
        }


@dataclass(frozen=True)
class QuantityRange:
    """Field metadata bounding a :class:`Quantity`: ``QuantityRange(min="16Mi")``.

    In the CRD: ``minimum`` (in bytes) for a quantity given as an integer and a CEL rule with
    Kubernetes' quantity library (API servers since 1.28) for one given as text.
    """

    min: str | None = None

    def _check(self, value: Quantity) -> Quantity:
        if self.min is not None and value.exact < quantity_value(self.min):
            raise PydanticCustomError(
                "quantity_range",
                "must be at least {min} (got {value})",
                {"min": self.min, "value": str(value)},
            )
        return value

    def __get_pydantic_core_schema__(
        self, source: type[Any], handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(self._check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = dict(handler(schema))
        if self.min is None or quantity_value(self.min) == 0:
            return json_schema
        smallest = quantity_value(self.min)
        if smallest != smallest.to_integral_value():
            raise ValueError(f"a quantity minimum must be whole bytes: {self.min}")
        json_schema["minimum"] = int(smallest)
        json_schema["x-kubernetes-validations"] = [
            {
                "rule": "type(self) != string || !isQuantity(self) || "
                f"quantity(self).compareTo(quantity('{self.min}')) >= 0",
                "message": f"must be at least {self.min}",
            }
        ]
        return json_schema
