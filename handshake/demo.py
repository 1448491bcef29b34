"""The demo partner feed: realistic exchanges pushed through the public ingest API.

Generation is pure (``DemoGenerator`` with its own ``random.Random``) so tests can check what it
makes; ``run_feed`` is the thin HTTP client that pushes it at a steady rate.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import httpx

log = logging.getLogger(__name__)

#: Country pairs weighted by real-world ties (trade, diaspora, twinning, sport), roughly.
TIES: list[tuple[str, str, int]] = [
    ("US", "MX", 14),
    ("US", "CA", 12),
    ("US", "CN", 11),
    ("US", "JP", 10),
    ("US", "GB", 10),
    ("DE", "FR", 12),
    ("FR", "GB", 9),
    ("DE", "PL", 8),
    ("FR", "IT", 8),
    ("ES", "FR", 7),
    ("CN", "JP", 8),
    ("CN", "KR", 8),
    ("JP", "KR", 7),
    ("IN", "US", 8),
    ("IN", "GB", 6),
    ("BR", "AR", 7),
    ("BR", "PT", 6),
    ("AU", "NZ", 7),
    ("AU", "JP", 5),
    ("ZA", "NG", 5),
    ("KE", "TZ", 5),
    ("EG", "SA", 4),
    ("TR", "DE", 6),
    ("RU", "KZ", 4),
    ("UA", "PL", 6),
    ("SE", "NO", 6),
    ("FI", "EE", 5),
    ("NL", "BE", 6),
    ("CA", "FR", 5),
    ("MA", "FR", 5),
    ("VN", "JP", 4),
    ("ID", "AU", 4),
    ("PH", "US", 5),
    ("CL", "PE", 4),
    ("CO", "MX", 4),
    ("GH", "GB", 3),
    ("SN", "FR", 3),
    ("IE", "US", 5),
    ("IL", "US", 4),
    ("SG", "MY", 4),
]

SISTER_CITIES: list[tuple[str, str, str, str]] = [
    ("Seattle", "US", "Kobe", "JP"),
    ("Paris", "FR", "Rome", "IT"),
    ("Chicago", "US", "Shanghai", "CN"),
    ("Hamburg", "DE", "Marseille", "FR"),
    ("San Francisco", "US", "Osaka", "JP"),
    ("Lyon", "FR", "Birmingham", "GB"),
    ("Kraków", "PL", "Nuremberg", "DE"),
    ("Busan", "KR", "Fukuoka", "JP"),
    ("Porto", "PT", "Bordeaux", "FR"),
    ("Toronto", "CA", "Chongqing", "CN"),
    ("Sydney", "AU", "Wellington", "NZ"),
    ("Nairobi", "KE", "Denver", "US"),
    ("Guadalajara", "MX", "San Antonio", "US"),
    ("Edinburgh", "GB", "Munich", "DE"),
    ("Kyiv", "UA", "Vilnius", "LT"),
]

TOURNAMENTS = [
    "Youth Football Friendship Cup",
    "International Table Tennis Open",
    "Junior Chess Olympiad",
    "Women's Rugby Sevens Invitational",
    "Masters Athletics Meet",
    "Friendship Marathon",
    "Para Swimming Gala",
]
CULTURAL = [
    "Folk Music Festival",
    "Film Week",
    "Contemporary Art Exchange",
    "Choir Tour",
    "Culinary Heritage Days",
]
SCIENTIFIC = ["Climate Research Workshop", "Ocean Observatory Residency", "Space Science Summer School"]
EDUCATIONAL = ["High School Exchange", "University Semester Exchange", "Language Immersion Camp"]
PROFESSIONAL = ["Nurses' Study Visit", "Young Entrepreneurs Forum", "Firefighters' Training Exchange"]
HUMANITARIAN = ["Disaster Relief Volunteers Visit", "Clean Water Volunteer Program"]

KIND_WEIGHTS = {
    "athletic": 24,
    "cultural": 22,
    "civic": 16,
    "educational": 14,
    "scientific": 10,
    "professional": 9,
    "humanitarian": 5,
}


@dataclass
class DemoGenerator:
    """Deterministic for a given seed; keeps the events it made so it can correct and cancel them."""

    seed: int = 7
    today: date = field(default_factory=date.today)
    prefix: str = "demo"
    rng: random.Random = field(init=False)
    made: dict[str, dict[str, Any]] = field(default_factory=dict, init=False)
    counter: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self._countries = sorted({c for a, b, _ in TIES for c in (a, b)})

    def _pair(self) -> tuple[str, str]:
        a, b, _ = self.rng.choices(TIES, weights=[w for *_, w in TIES])[0]
        return (a, b) if self.rng.random() < 0.5 else (b, a)

    def _dates(self) -> tuple[str, str]:
        start = self.today + timedelta(days=self.rng.randint(-540, 240))
        length = self.rng.choice([0, 0, 1, 2, 3, 6, 13, 30])
        return start.isoformat(), (start + timedelta(days=length)).isoformat()

    def _status(self, starts_on: str) -> str:
        if date.fromisoformat(starts_on) < self.today:
            return "completed"
        return self.rng.choice(["announced", "confirmed", "confirmed"])

    def new_event(self) -> dict[str, Any]:
        self.counter += 1
        kind = self.rng.choices(list(KIND_WEIGHTS), weights=list(KIND_WEIGHTS.values()))[0]
        starts_on, ends_on = self._dates()
        event_id = f"{self.prefix}-{self.seed}-{self.counter:07d}"
        if kind == "civic":
            city_a, host, city_b, guest = self.rng.choice(SISTER_CITIES)
            if self.rng.random() < 0.5:
                city_a, host, city_b, guest = city_b, guest, city_a, host
            title = f"{city_b} delegation visits sister city {city_a}"
            delegations = [{"country": guest, "participants": self.rng.randint(4, 40)}]
            city = city_a
        elif kind == "athletic" and self.rng.random() < 0.45:
            host = self.rng.choice(self._countries)
            others = [c for c in self._countries if c != host]
            teams = self.rng.sample(others, self.rng.randint(3, 8))
            title = f"{self.rng.choice(TOURNAMENTS)} {starts_on[:4]}"
            delegations = [{"country": c, "participants": self.rng.randint(8, 30)} for c in teams]
            city = None
        else:
            host, guest = self._pair()
            names = {
                "athletic": TOURNAMENTS,
                "cultural": CULTURAL,
                "scientific": SCIENTIFIC,
                "educational": EDUCATIONAL,
                "professional": PROFESSIONAL,
                "humanitarian": HUMANITARIAN,
            }[kind]
            title = self.rng.choice(names)
            delegations = [{"country": guest, "participants": self.rng.randint(2, 120)}]
            if self.rng.random() < 0.15:
                extra = self.rng.choice([c for c in self._countries if c not in (host, guest)])
                delegations.append({"country": extra, "participants": self.rng.randint(2, 40)})
            city = None
        event: dict[str, Any] = {
            "event_id": event_id,
            "revision": 1,
            "kind": kind,
            "title": title,
            "host_country": host,
            "delegations": delegations,
            "starts_on": starts_on,
            "ends_on": ends_on,
            "status": self._status(starts_on),
            "format": self.rng.choices(["in_person", "hybrid", "virtual"], weights=[85, 10, 5])[0],
            "tags": ["demo"],
        }
        if city:
            event["city"] = city
        self.made[event_id] = event
        return event

    def correction(self) -> dict[str, Any] | None:
        """A higher revision of an earlier event: more participants, a confirmed status or new dates."""
        live = [e for e in self.made.values() if e["status"] != "cancelled"]
        if not live:
            return None
        event = dict(self.rng.choice(live))
        event["revision"] += 1
        event["delegations"] = [
            {**d, "participants": (d.get("participants") or 0) + self.rng.randint(1, 10)}
            for d in event["delegations"]
        ]
        if event["status"] == "announced":
            event["status"] = "confirmed"
        self.made[event["event_id"]] = event
        return event

    def cancellation(self) -> str | None:
        live = [k for k, e in self.made.items() if e["status"] in ("announced", "confirmed")]
        if not live:
            return None
        event_id = self.rng.choice(live)
        event = dict(self.made[event_id])
        event["status"] = "cancelled"
        event["revision"] += 1
        self.made[event_id] = event
        return event_id

    def actions(self) -> Iterator[tuple[str, Any]]:
        """An endless mix: ~85 % new events, ~10 % corrections, ~5 % cancellations."""
        while True:
            roll = self.rng.random()
            if roll < 0.10 and (fixed := self.correction()):
                yield "post", fixed
            elif roll < 0.15 and (gone := self.cancellation()):
                yield "delete", gone
            else:
                yield "post", self.new_event()


def run_feed(
    url: str, key: str, rate: float, count: int | None = None, seed: int = 7, stop: Any = None
) -> dict[str, int]:
    """Push the demo mix to ingest at ``rate`` per second (``count`` actions, or until ``stop`` is set)."""
    gen = DemoGenerator(seed=seed)
    totals = {"sent": 0, "accepted": 0, "duplicate": 0, "rejected": 0, "retried": 0}
    interval = 1.0 / rate if rate > 0 else 0.0
    next_at = time.monotonic()
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=15) as client:
        for verb, payload in gen.actions():
            if (count is not None and totals["sent"] >= count) or (stop is not None and stop.is_set()):
                break
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            next_at = max(next_at + interval, time.monotonic() - 1.0)
            while True:
                try:
                    if verb == "post":
                        response = client.post("/v1/events", json=payload)
                    else:
                        response = client.delete(f"/v1/events/{payload}")
                except httpx.HTTPError as exc:
                    log.warning("ingest unreachable, retrying", extra={"error": str(exc)})
                    totals["retried"] += 1
                    time.sleep(1.0)
                    continue
                if response.status_code in (429, 503):
                    totals["retried"] += 1
                    time.sleep(float(response.headers.get("Retry-After", "1")))
                    continue
                break
            totals["sent"] += 1
            if response.status_code < 300:
                status = response.json().get("status", "accepted")
                totals["duplicate" if status == "duplicate" else "accepted"] += 1
            else:
                totals["rejected"] += 1
                log.warning(
                    "demo event rejected", extra={"status": response.status_code, "body": response.text[:300]}
                )
    return totals
