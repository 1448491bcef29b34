"""The live view: versions, indexes, rankings, filters, paging and incremental totals."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from services.api.live import Live
from services.api.testing import make_stats
from services.api.view import LiveView, PairQuery, recompute_totals


def view_of(*snapshots):  # type: ignore[no-untyped-def]
    view = LiveView()
    for s in snapshots:
        view.apply(s)
    return view


def test_newer_version_replaces_and_stale_is_ignored() -> None:
    view = LiveView()
    assert view.apply(make_stats("CN", "US", version=2, events=5))
    assert not view.apply(make_stats("CN", "US", version=1, events=99))
    assert not view.apply(make_stats("CN", "US", version=2, events=99))
    assert view.get("CN-US").active_events == 5  # type: ignore[union-attr]
    assert view.apply(make_stats("CN", "US", version=3, events=7))
    assert view.get("CN-US").active_events == 7  # type: ignore[union-attr]
    assert view.totals().active_events == 7
    assert len(view) == 1


def test_country_index_and_country_detail() -> None:
    view = view_of(
        make_stats("DE", "FR", events=2), make_stats("FR", "US", events=5), make_stats("CN", "US", events=1)
    )
    assert view.pairs_of("FR") == {"DE-FR", "FR-US"}
    assert view.countries() == ["CN", "DE", "FR", "US"]
    detail = view.country("FR")
    assert detail is not None
    assert [r.stats.pair for r in detail.partners] == ["FR-US", "DE-FR"]
    assert detail.totals.active_events == 7
    assert detail.totals.pairs == 2
    assert view.country("JP") is None


def test_unfiltered_ranking_sorts_by_events_then_pair_and_pages() -> None:
    view = view_of(
        make_stats("CN", "US", events=3, participants=100),
        make_stats("DE", "FR", events=3, participants=5),
        make_stats("FR", "US", events=9, participants=1),
        make_stats("BR", "JP", events=1, participants=1000),
    )
    page = view.query(PairQuery(limit=2))
    assert page.total == 4
    assert [r.stats.pair for r in page.items] == ["FR-US", "CN-US"]
    assert [r.value for r in page.items] == [9, 3]
    page = view.query(PairQuery(limit=2, offset=2))
    assert [r.stats.pair for r in page.items] == ["DE-FR", "BR-JP"]
    page = view.query(PairQuery(sort="participants", limit=10))
    assert [r.stats.pair for r in page.items] == ["BR-JP", "CN-US", "DE-FR", "FR-US"]
    assert page.items[0].value == 1000
    assert view.query(PairQuery(offset=10)).items == []


def test_ranking_follows_updates() -> None:
    view = view_of(make_stats("CN", "US", events=3), make_stats("DE", "FR", events=2))
    view.apply(make_stats("DE", "FR", version=2, events=10))
    assert [r.stats.pair for r in view.query(PairQuery()).items] == ["DE-FR", "CN-US"]
    filtered = view.query(PairQuery(country="FR"))
    assert [r.value for r in filtered.items] == [10]


def test_filters_kind_status_country_and_month_range() -> None:
    view = view_of(
        make_stats("CN", "US", events=4, by_kind={"athletic": 1, "cultural": 3}, by_month={"2024-01": 4}),
        make_stats("DE", "FR", events=2, by_kind={"athletic": 2}, by_month={"2025-03": 1, "2025-07": 1}),
        make_stats("FR", "US", events=3, by_kind={"civic": 3}, by_month={"2025-05": 3}, cancelled=1),
    )
    athletic = view.query(PairQuery(kind="athletic"))
    assert athletic.total == 2
    assert [(r.stats.pair, r.value) for r in athletic.items] == [("DE-FR", 2), ("CN-US", 1)]
    assert [r.stats.pair for r in view.query(PairQuery(status="cancelled")).items] == ["FR-US"]
    both = view.query(PairQuery(country="US", kind="civic"))
    assert [r.stats.pair for r in both.items] == ["FR-US"]
    months = view.query(PairQuery(month_from="2025-01", month_to="2025-06"))
    assert [(r.stats.pair, r.value) for r in months.items] == [("FR-US", 3), ("DE-FR", 1)]
    assert view.query(PairQuery(month_from="2025-06")).total == 1
    assert view.query(PairQuery(month_to="2024-12")).items[0].stats.pair == "CN-US"
    assert view.query(PairQuery(country="JP")).total == 0
    paged = view.query(PairQuery(country="US", limit=1, offset=1))
    assert paged.total == 2
    assert [r.stats.pair for r in paged.items] == ["FR-US"]


PAIRS = ["CN-US", "DE-FR", "FR-US", "BR-JP", "DE-US"]


@st.composite
def updates(draw):  # type: ignore[no-untyped-def]
    out = []
    for _ in range(draw(st.integers(0, 25))):
        pair = draw(st.sampled_from(PAIRS))
        a, b = pair.split("-")
        kinds = draw(st.dictionaries(st.sampled_from(["athletic", "civic", "cultural"]), st.integers(1, 5)))
        months = draw(st.dictionaries(st.sampled_from(["2024-12", "2025-01", "2025-02"]), st.integers(1, 5)))
        out.append(
            make_stats(
                a,
                b,
                version=draw(st.integers(0, 8)),
                events=sum(kinds.values()),
                participants=draw(st.integers(0, 500)),
                by_kind=kinds,
                by_month=months,
                cancelled=draw(st.integers(0, 2)),
            )
        )
    return out


@settings(max_examples=60, deadline=None)
@given(updates())
def test_incremental_totals_equal_recomputation(snapshots) -> None:  # type: ignore[no-untyped-def]
    view = LiveView()
    latest: dict[str, object] = {}
    for s in snapshots:
        stored = latest.get(s.pair)
        expected = stored is None or s.version > stored.version  # type: ignore[attr-defined]
        assert view.apply(s) is expected
        if expected:
            latest[s.pair] = s
    assert view.totals() == recompute_totals(view)
    assert {s.pair for s in view} == set(latest)
    assert all(view.get(p) is s for p, s in latest.items())
    # rankings and indexes agree with a brute-force recomputation
    page = view.query(PairQuery(limit=100))
    brute = sorted(latest.values(), key=lambda s: (-s.active_events, s.pair))  # type: ignore[attr-defined]
    assert [r.stats for r in page.items] == brute
    for kind in ("athletic", "civic", "cultural"):  # indexed path agrees with a scan
        indexed = view.query(PairQuery(kind=kind, limit=100))
        scanned = sorted(
            ((-s.by_kind.get(kind, 0), s.pair) for s in latest.values() if s.by_kind.get(kind, 0) > 0),  # type: ignore[attr-defined]
        )
        assert [(-r.value, r.stats.pair) for r in indexed.items] == scanned
        assert indexed.total == len(scanned)
    status = view.query(PairQuery(status="cancelled", limit=100))
    assert status.total == sum(1 for s in latest.values() if s.cancelled)  # type: ignore[attr-defined]
    for code in ("US", "FR", "JP"):
        assert view.pairs_of(code) == {p for p in latest if code in p.split("-")}
        assert view.query(PairQuery(country=code)).total == len(view.pairs_of(code))


@settings(max_examples=60, deadline=None)
@given(updates(), st.sampled_from([None, "athletic", "civic"]), st.sampled_from([None, "2025-01"]))
def test_country_activity_sums_the_matching_pairs(snapshots, kind, month) -> None:  # type: ignore[no-untyped-def]
    view = view_of(*snapshots)
    query = PairQuery(kind=kind, month_from=month, month_to=month, limit=500)
    ranked = view.query(query).items
    expected: dict[str, tuple[int, int]] = {}
    for r in ranked:
        for code in r.stats.countries:
            value, pairs = expected.get(code, (0, 0))
            expected[code] = (value + r.value, pairs + 1)
    rows = view.activity(query)
    assert {a.code: (a.value, a.pairs) for a in rows} == expected
    assert [(-a.value, a.code) for a in rows] == sorted((-v, c) for c, (v, _) in expected.items())


def test_a_snapshot_that_breaks_the_view_is_skipped_and_the_drain_goes_on() -> None:
    """An exception while applying one snapshot must not leave the view frozen (still ready)."""
    live = Live()  # no event loop: the drain runs inline
    broken = make_stats("FR", "DE", events=2, version=1)
    original = live.view.replace

    def replace(stats):  # type: ignore[no-untyped-def]
        if stats is broken:
            raise ValueError("not in list")
        return original(stats)

    live.view.replace = replace  # type: ignore[method-assign]
    live.deliver([broken, make_stats("FR", "IT", events=3, version=1)])
    live.caught_up()
    live.deliver([make_stats("FR", "DE", events=4, version=2)])
    assert live.failed == 1
    assert live.ready
    assert {s.pair: s.active_events for s in live.view} == {"FR-IT": 3, "DE-FR": 4}
