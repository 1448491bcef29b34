import pytest
from pydantic import BaseModel, ValidationError

from schemas.countries import CountryCode, all_countries, country_name, is_former, normalize_country


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("FR", "FR"),
        ("fr", "FR"),
        (" Fr ", "FR"),
        ("FRA", "FR"),
        ("fra", "FR"),
        ("USA", "US"),
        ("CHN", "CN"),
        ("SUHH", "SUHH"),
        ("suhh", "SUHH"),
        ("DDDE", "DDDE"),
        ("YUCS", "YUCS"),
        ("CSHH", "CSHH"),
        ("SUN", "SUHH"),  # former alpha-3, unambiguous
        ("DDR", "DDDE"),
        ("ATF", "TF"),  # alpha-3 shared by a former and a current country: current wins
    ],
)
def test_normalize_country(raw: str, expected: str) -> None:
    assert normalize_country(raw) == expected


@pytest.mark.parametrize("raw", ["", "XX", "ZZZ", "U S", "SUHHH", "12", "SU", "U"])
def test_normalize_country_rejects(raw: str) -> None:
    with pytest.raises(ValueError, match="is not an ISO 3166 country code"):
        normalize_country(raw)


def test_names_and_former() -> None:
    assert country_name("fr") == "France"
    assert "Soviet" in country_name("SUHH")
    assert is_former("SUHH")
    assert is_former("sun")
    assert not is_former("FRA")
    codes = [c for c, _ in all_countries()]
    assert "FR" in codes and "SUHH" in codes and "DDDE" in codes
    assert len(codes) == len(set(codes))
    assert all(len(c) in (2, 4) for c in codes)


class _M(BaseModel):
    country: CountryCode


def test_country_code_type() -> None:
    assert _M(country="deu").country == "DE"
    with pytest.raises(ValidationError) as info:
        _M(country="XX")
    assert info.value.errors()[0]["type"] == "country_code"
    with pytest.raises(ValidationError) as info:
        _M.model_validate({"country": 12})
    assert info.value.errors()[0]["type"] == "country_type"
    schema = _M.model_json_schema()["properties"]["country"]
    assert schema["type"] == "string"
    assert schema["pattern"] == "^[A-Za-z]{2,4}$"
    assert schema["description"]


def test_only_ascii_letters_make_a_code() -> None:
    # str.upper() turns "ß" into "SS" (South Sudan) and "ﬀ" into "FF": neither is a code
    for text in ("ß", "ßs", "\ufb00"):
        with pytest.raises(ValueError):
            normalize_country(text)
    assert normalize_country(" ss ") == "SS"
