"""Where each country code sits on the dashboard's world map: ``static/places.json``.

The map draws Natural Earth's countries (npm ``world-atlas``, vendored under
``static/vendor/world-atlas``). Its features are keyed by ISO 3166-1 *numeric* ids, the platform
by alpha-2 and ISO 3166-3 codes. This module maps one to the other and gives every code a point
to draw a tie from: the area centroid of a country's largest polygon (mainland France, not
French Guiana), and for former countries the capital they were governed from (the Soviet Union
at Moscow, East Germany at Berlin), since they have no shape on a current map.

``python -m services.api.geo`` writes the file; a unit test fails when it drifts.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pycountry

STATIC = Path(__file__).parent / "static"
ATLAS = STATIC / "vendor" / "world-atlas" / "countries-50m.json"
PLACES = STATIC / "places.json"

# ISO 3166-3 former countries: (longitude, latitude) of the seat of government they had.
FORMER: dict[str, tuple[float, float]] = {
    "AIDJ": (43.15, 11.59),  # French Afars and Issas: Djibouti
    "ANHH": (-68.93, 12.11),  # Netherlands Antilles: Willemstad
    "BQAQ": (-60.0, -75.0),  # British Antarctic Territory
    "BUMM": (96.16, 16.87),  # Burma: Rangoon
    "BYAA": (27.56, 53.90),  # Byelorussian SSR: Minsk
    "CSHH": (14.42, 50.08),  # Czechoslovakia: Prague
    "CSXX": (20.46, 44.82),  # Serbia and Montenegro: Belgrade
    "CTKI": (-171.72, -2.84),  # Canton and Enderbury Islands
    "DDDE": (13.40, 52.52),  # German Democratic Republic: Berlin
    "DYBJ": (2.63, 6.50),  # Dahomey: Porto-Novo
    "FQHH": (70.22, -49.35),  # French Southern and Antarctic Territories
    "FXFR": (2.35, 48.86),  # Metropolitan France: Paris
    "GEHH": (172.98, 1.45),  # Gilbert and Ellice Islands: Tarawa
    "HVBF": (-1.53, 12.37),  # Upper Volta: Ouagadougou
    "JTUM": (-169.52, 16.73),  # Johnston Island
    "MIUM": (-177.37, 28.21),  # Midway Islands
    "NHVU": (168.32, -17.73),  # New Hebrides: Port Vila
    "NQAQ": (0.0, -72.0),  # Dronning Maud Land
    "NTHH": (44.80, 29.20),  # Neutral Zone (Saudi Arabia-Iraq)
    "PCHH": (145.75, 15.18),  # Pacific Islands trust territory: Saipan
    "PUUM": (-162.07, 5.88),  # US Miscellaneous Pacific Islands: Palmyra
    "PZPA": (-79.57, 8.95),  # Panama Canal Zone: Balboa
    "RHZW": (31.05, -17.83),  # Southern Rhodesia: Salisbury
    "SKIN": (88.61, 27.33),  # Sikkim: Gangtok
    "SUHH": (37.62, 55.76),  # Soviet Union: Moscow
    "TPTL": (125.57, -8.56),  # East Timor: Dili
    "VDVN": (105.85, 21.03),  # Democratic Republic of Viet-Nam: Hanoi
    "WKUM": (166.63, 19.29),  # Wake Island
    "YDYE": (45.03, 12.79),  # People's Democratic Republic of Yemen: Aden
    "YUCS": (20.46, 44.82),  # Yugoslavia: Belgrade
    "ZRCD": (15.31, -4.33),  # Zaire: Kinshasa
}

Ring = list[tuple[float, float]]


def decode_arcs(topology: dict[str, Any]) -> list[Ring]:
    """TopoJSON arcs in degrees (quantized arcs are delta-encoded integers)."""
    scale = topology.get("transform", {}).get("scale", [1, 1])
    translate = topology.get("transform", {}).get("translate", [0, 0])
    quantized = "transform" in topology
    arcs: list[Ring] = []
    for arc in topology["arcs"]:
        x = y = 0
        points: Ring = []
        for dx, dy in arc:
            if quantized:
                x, y = x + dx, y + dy
                points.append((x * scale[0] + translate[0], y * scale[1] + translate[1]))
            else:
                points.append((dx, dy))
        arcs.append(points)
    return arcs


def ring_points(arcs: list[Ring], indexes: Sequence[int]) -> Ring:
    """A ring from its arc indexes (a negative index ~i is arc i reversed)."""
    points: Ring = []
    for index in indexes:
        arc = arcs[index] if index >= 0 else arcs[~index][::-1]
        points.extend(arc if not points else arc[1:])
    return points


def unwrap(ring: Ring) -> Ring:
    """A ring across the antimeridian (Chukotka, Fiji) with its western longitudes moved past 180."""
    lons = [x for x, _ in ring]
    if max(lons) - min(lons) <= 180:
        return ring
    return [(x + 360 if x < 0 else x, y) for x, y in ring]


def area_centroid(ring: Ring) -> tuple[float, tuple[float, float]]:
    """(absolute area, centroid) of a simple polygon ring, in the plane of lon/lat."""
    ring = unwrap(ring)
    area2 = cx = cy = 0.0
    for (x0, y0), (x1, y1) in zip(ring, ring[1:] + ring[:1], strict=True):
        cross = x0 * y1 - x1 * y0
        area2 += cross
        cx += (x0 + x1) * cross
        cy += (y0 + y1) * cross
    if area2 == 0:
        xs, ys = zip(*ring, strict=True)
        return 0.0, (sum(xs) / len(xs), sum(ys) / len(ys))
    return abs(area2) / 2, (cx / (3 * area2), cy / (3 * area2))


def largest_polygon_centroid(geometry: dict[str, Any], arcs: list[Ring]) -> tuple[float, float]:
    polygons = geometry["arcs"] if geometry["type"] == "MultiPolygon" else [geometry["arcs"]]
    _, (lon, lat) = max(
        (area_centroid(ring_points(arcs, polygon[0])) for polygon in polygons), key=lambda a: a[0]
    )
    return round((lon + 180) % 360 - 180, 2), round(lat, 2)


def places(topology: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """code -> {"id": the map feature's id (current countries on the map), "at": [lon, lat]}."""
    arcs = decode_arcs(topology)
    by_numeric = {c.numeric: c.alpha_2 for c in pycountry.countries}
    out: dict[str, dict[str, Any]] = {}
    for geometry in topology["objects"]["countries"]["geometries"]:
        code = by_numeric.get(geometry.get("id") or "")
        if code is None or geometry["type"] not in ("Polygon", "MultiPolygon"):
            continue  # Kosovo, N. Cyprus, Somaliland ... have no ISO 3166-1 numeric id
        out[code] = {"id": geometry["id"], "at": list(largest_polygon_centroid(geometry, arcs))}
    historic = {h.alpha_4 for h in pycountry.historic_countries}
    for code, (lon, lat) in FORMER.items():
        if code in historic:
            out[code] = {"at": [lon, lat]}
    return dict(sorted(out.items()))


def render() -> str:
    return json.dumps(places(json.loads(ATLAS.read_text())), separators=(",", ":"), sort_keys=True) + "\n"


def main() -> None:
    PLACES.write_text(render())
    print(f"wrote {PLACES}")


if __name__ == "__main__":
    main()
