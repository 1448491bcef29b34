"""The dashboard map's places: generated from the vendored atlas, checked in, never drifting."""

from __future__ import annotations

import json

import pycountry

from services.api import geo


def test_places_json_is_generated_from_the_atlas() -> None:
    assert geo.PLACES.read_text() == geo.render(), "run `make schemas` (python -m services.api.geo)"


def test_every_country_is_placed_where_it_is() -> None:
    places = json.loads(geo.PLACES.read_text())
    near = {  # (lon, lat) of a point well inside the country's main land, and a tolerance in degrees
        "US": ((-98, 39), 6),
        "FR": ((2.5, 46.5), 3),  # mainland, not French Guiana
        "RU": ((95, 62), 15),  # not wrapped across the antimeridian
        "FJ": ((178, -17.8), 2),
        "NO": ((12, 63), 6),
        "JP": ((138, 36), 4),
    }
    for code, ((lon, lat), tolerance) in near.items():
        at = places[code]["at"]
        assert abs(at[0] - lon) <= tolerance and abs(at[1] - lat) <= tolerance, (code, at)
    assert places["US"]["id"] == "840"
    # former countries where they stood
    assert places["SUHH"]["at"] == [37.62, 55.76] and "id" not in places["SUHH"]
    assert places["DDDE"]["at"] == [13.40, 52.52]
    assert {h.alpha_4 for h in pycountry.historic_countries} <= set(places)
    current = {c.alpha_2 for c in pycountry.countries}
    assert len(current & set(places)) >= 230  # tiny territories absent from the 1:50m atlas are not


def test_area_centroid_of_a_square_and_antimeridian_ring() -> None:
    area, (x, y) = geo.area_centroid([(0, 0), (2, 0), (2, 2), (0, 2)])
    assert area == 4 and (x, y) == (1, 1)
    _, (x, _) = geo.area_centroid([(179, 0), (-179, 0), (-179, 1), (179, 1)])
    assert x == 180
