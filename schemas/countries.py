"""ISO 3166 country codes: current (ISO 3166-1) and former countries (ISO 3166-3).

Current countries are stored as alpha-2 (``FR``); alpha-3 input (``FRA``) is accepted.
Former countries are stored as their 4-letter ISO 3166-3 code (``SUHH``); their old alpha-3
(``SUN``) is accepted too unless a current country uses it (then the current one wins).
"""

from __future__ import annotations

import functools
from typing import Annotated, Any

import pycountry
from pydantic import BeforeValidator, WithJsonSchema
from pydantic_core import PydanticCustomError


def _display_name(obj: Any) -> str:
    return str(getattr(obj, "common_name", None) or obj.name)


@functools.cache
def _tables() -> tuple[dict[str, str], dict[str, str]]:
    """(lookup: accepted upper-case input -> canonical code, names: canonical code -> name)."""
    lookup: dict[str, str] = {}
    names: dict[str, str] = {}
    for c in pycountry.countries:
        names[c.alpha_2] = _display_name(c)
        lookup[c.alpha_2] = c.alpha_2
        lookup[c.alpha_3] = c.alpha_2
    for h in pycountry.historic_countries:
        code = h.alpha_4
        names[code] = _display_name(h)
        lookup[code] = code
        alpha_3 = getattr(h, "alpha_3", None)
        if alpha_3 and alpha_3 not in lookup:
            lookup[alpha_3] = code
    return lookup, names


@functools.lru_cache(maxsize=4096)
def normalize_country(value: str) -> str:
    """Return the canonical code (alpha-2, or alpha-4 for former countries) or raise ValueError."""
    if isinstance(value, str) and value.isascii():  # "ß".upper() is "SS": not a code for South Sudan
        found = _tables()[0].get(value.strip().upper())
        if found is not None:
            return found
    raise ValueError(f"'{value}' is not an ISO 3166 country code")


def country_name(code: str) -> str:
    """Display name of a country code (any accepted form)."""
    return _tables()[1][normalize_country(code)]


def is_former(code: str) -> bool:
    """True for an ISO 3166-3 former country (SUHH, DDDE, YUCS, CSHH ...)."""
    return len(normalize_country(code)) == 4


def all_countries() -> list[tuple[str, str]]:
    """Every canonical (code, name), current countries first, each group sorted by code."""
    names = _tables()[1]
    return sorted(names.items(), key=lambda item: (len(item[0]) == 4, item[0]))


def _validate_country(value: object) -> str:
    if not isinstance(value, str):
        raise PydanticCustomError("country_type", "expected a country code string")
    try:
        return normalize_country(value)
    except ValueError:
        raise PydanticCustomError(
            "country_code", "'{value}' is not an ISO 3166 country code", {"value": value}
        ) from None


CountryCode = Annotated[
    str,
    BeforeValidator(_validate_country),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": "^[A-Za-z]{2,4}$",
            "description": (
                "ISO 3166-1 alpha-2 or alpha-3 code (stored as alpha-2, e.g. FR), or the ISO 3166-3 "
                "4-letter code of a former country (e.g. SUHH)"
            ),
        }
    ),
]
