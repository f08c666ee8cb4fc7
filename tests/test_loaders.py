"""Loaders on the shared real files (exact counts from PROVENANCE.md) and on small files
with planted bad rows (exact file/line/field in the report, good rows kept)."""

from __future__ import annotations

import gzip
import json
from datetime import datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from recfunnel.data import (
    ColumnMapping,
    DataError,
    ItemsMapping,
    UsersMapping,
    detect_format,
    load_dataset,
    load_movielens_100k,
    load_movielens_latest,
    load_s3rec,
    load_table,
)
from recfunnel.data.textio import time_expr

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="module")
def shared() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"shared data folder absent: {SHARED}")
    return SHARED


def errors(ds_or_report) -> set[tuple[str, int, str]]:
    report = getattr(ds_or_report, "report", ds_or_report)
    return {(e.file, e.line, e.field) for e in report.errors}


def assert_sorted_per_user(ds) -> None:
    u, ts, pos = ds.user, ds.ts, ds.events["pos"].to_numpy()
    same = u[1:] == u[:-1]
    assert np.all(u[1:] >= u[:-1])
    later = (ts[1:] > ts[:-1]) | ((ts[1:] == ts[:-1]) & (pos[1:] > pos[:-1]))
    assert np.all(later[same])


# ---- real data ----------------------------------------------------------------------------
def test_ml100k_real(shared: Path) -> None:
    ds = load_movielens_100k(shared / "ml-100k")
    assert (ds.n_events, ds.n_users, ds.n_items) == (100_000, 943, 1_682)
    assert ds.report.n_dropped == 0
    assert ds.report.rows_kept["u.data.gz"] == 100_000
    assert ds.report.rows_kept["u.item"] == 1_682
    assert ds.report.rows_kept["u.user"] == 943
    hist = np.bincount(ds.value.astype(int), minlength=6)[1:]
    assert hist.tolist() == [6_110, 11_370, 27_145, 34_174, 21_201]
    toy = ds.items.row(ds.item_ids.get("1"), named=True)
    assert toy["title"] == "Toy Story (1995)"
    assert toy["categories"] == ["Animation", "Children's", "Comedy"]
    assert toy["created"] == 788_918_400  # 01-Jan-1995 UTC
    assert len(ds.category_ids) == 19
    user1 = ds.users.row(ds.user_ids.get("1"), named=True)
    assert (user1["age"], user1["gender"], user1["occupation"], user1["zip"]) == (24, "M", "technician", "85711")
    assert ds.users["age"].dtype == pl.Int64
    assert ds.user_ids.raw(0) == "1" and ds.item_ids.raw(1681) == "1682"
    assert set(ds.events["event"].unique()) == {"rating"}
    assert_sorted_per_user(ds)
    # Item 267 has an empty release date: null, not a dropped row.
    assert ds.items.row(ds.item_ids.get("267"), named=True)["created"] is None


def test_ml_latest_real(shared: Path) -> None:
    ds = load_movielens_latest(shared / "ml-latest-small")
    assert (ds.n_events, ds.n_users, ds.n_items) == (100_836, 610, 9_742)
    assert ds.report.n_dropped == 0
    assert int((ds.item_user_count > 0).sum()) == 9_724
    jumanji = ds.items.row(ds.item_ids.get("2"), named=True)
    assert jumanji["categories"] == ["Adventure", "Children", "Fantasy"]
    assert "(no genres listed)" not in ds.category_ids
    # A quoted title with a comma survives the CSV parse.
    assert ds.items.filter(pl.col("title").str.contains(",")).height > 0
    assert ds.report.rows_read["tags.csv"] == 3_683
    assert sum(len(t) for t in ds.items["tags"].to_list()) > 1_000
    assert all(t == t.lower() for ts in ds.items["tags"].to_list() for t in ts)
    assert_sorted_per_user(ds)


def test_beauty_real(shared: Path) -> None:
    ds = load_s3rec(shared / "amazon-beauty-s3rec")
    assert ds.name == "Beauty"
    assert ds.ordinal_time
    assert (ds.n_events, ds.n_users, ds.n_items) == (198_502, 22_363, 12_101)
    assert len(ds.category_ids) == 637
    # 45,037 listed item-attribute pairs, 5 of them repeated within an item.
    assert int(ds.item_categories.sum()) == 45_032
    assert sum(len(c) for c in ds.items["categories"].to_list()) == 45_032
    assert ds.user_ids.raw(0) == "1" and ds.item_ids.raw(0) == "1"
    # Line 2 is "2 6 7 8 9 10 4 11": ts is the position in the sequence.
    items, ts = ds.history(ds.user_ids.get("2"))
    assert ds.item_ids.raws(items) == ["6", "7", "8", "9", "10", "4", "11"]
    assert ts.tolist() == list(range(7))
    assert ds.events["pos"].n_unique() == 198_502
    assert_sorted_per_user(ds)


def test_detect_format_real(shared: Path) -> None:
    assert detect_format(shared / "ml-100k") == "movielens-100k"
    assert detect_format(shared / "ml-latest-small") == "movielens-latest"
    assert detect_format(shared / "amazon-beauty-s3rec") == "s3rec"
    assert load_dataset(shared / "ml-100k").n_events == 100_000


# ---- planted bad rows: ML-100K ------------------------------------------------------------
U_DATA = (
    "1\t10\t4\t881250949\n"  # 1 good
    "2\t20\t3\n"  # 2 wrong field count
    "x\t30\t5\t881250950\n"  # 3 non-numeric user id
    "3\t40\t5\tyesterday\n"  # 4 unparseable time
    "3\t41\t5\t-5\n"  # 5 negative time
    "4\t50\tfive\t881250951\n"  # 6 non-numeric rating
    "\n"  # 7 blank: skipped, not a row
    "5\t60\t2\t881250952\n"  # 8 good; item 60 is not in the catalog
    "1\t11\t3\t881250949\n"  # 9 good, same time as line 1
)
FLAGS = "|".join(["0"] * 19)


def write_ml100k(root: Path, gz: bool = False) -> None:
    root.mkdir(parents=True, exist_ok=True)
    if gz:
        (root / "u.data.gz").write_bytes(gzip.compress(U_DATA.encode()))
    else:
        (root / "u.data").write_text(U_DATA)
    action = "|".join(["0", "1"] + ["0"] * 17)
    (root / "u.item").write_bytes(
        (
            f"10|Caf\xe9 Society (1995)|01-Jan-1995||http://x|{action}\n"
            f"11|No Date||||{FLAGS}\n"
            f"zz|Bad Id|01-Jan-1995||http://x|{FLAGS}\n"
            f"12|Too Few|01-Jan-1995\n"
        ).encode("latin-1")
    )
    (root / "u.user").write_text("1|24|M|technician|85711\n5|old|F|other|94043\n")


def test_ml100k_bad_rows(tmp_path: Path) -> None:
    write_ml100k(tmp_path)
    ds = load_movielens_100k(tmp_path)
    assert errors(ds) == {
        ("u.data", 2, "row"),
        ("u.data", 3, "user"),
        ("u.data", 4, "timestamp"),
        ("u.data", 5, "timestamp"),
        ("u.data", 6, "rating"),
        ("u.item", 3, "item"),
        ("u.item", 4, "row"),
        ("u.user", 2, "age"),
    }
    reasons = {(e.line, e.field): e.reason for e in ds.report.errors if e.file == "u.data"}
    assert "negative" in reasons[(5, "timestamp")]
    assert "expected 4 fields, found 3" == reasons[(2, "row")]
    assert ds.report.rows_read["u.data"] == 8 and ds.report.rows_kept["u.data"] == 3
    assert ds.n_events == 3
    # Users: profile file first, then event users; items: catalog then event items.
    assert ds.user_ids.raw_ids == ["1", "5"]
    assert ds.item_ids.raw_ids == ["10", "11", "60"]
    cafe = ds.items.row(0, named=True)
    assert cafe["title"] == "Café Society (1995)" and cafe["categories"] == ["Action"]
    assert ds.items.row(1, named=True)["created"] is None
    assert ds.items.row(2, named=True)["categories"] == []  # event-only item, empty attributes
    # Ties in time keep file order: line 1 (pos 0) before line 9 (pos 7).
    items, _ = ds.history(0)
    assert ds.item_ids.raws(items) == ["10", "11"]
    assert ds.events["pos"].to_list() == [0, 7, 6]
    summary = ds.report.summary()
    assert "u.data: 8 rows read, 3 kept, 5 dropped" in summary


def test_ml100k_gzip_copy_loads_the_same(tmp_path: Path) -> None:
    write_ml100k(tmp_path / "plain")
    write_ml100k(tmp_path / "gz", gz=True)
    a, b = load_movielens_100k(tmp_path / "plain"), load_movielens_100k(tmp_path / "gz")
    assert a.events.equals(b.events)
    assert {(f, l, fd) for f, l, fd in errors(b) if f.startswith("u.data")} == {
        ("u.data.gz", n, fd) for f, n, fd in errors(a) if f == "u.data"
    }


def test_ml100k_missing_and_all_bad(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="u.data"):
        load_movielens_100k(tmp_path)
    write_ml100k(tmp_path)
    (tmp_path / "u.data").write_text("a\tb\tc\td\n1\t2\n")
    with pytest.raises(DataError, match=r"u\.data: no valid row among 2 read"):
        load_movielens_100k(tmp_path)


# ---- planted bad rows: ML-latest (CSV, UTF-8) -------------------------------------------
def write_ml_latest(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    ratings = (
        "userId,movieId,rating,timestamp\n"
        "1,1,4.0,964982703\n"  # 2
        "1,2,x,964982704\n"  # 3 bad rating
        "1,3,4.0,964982705,9\n"  # 4 wrong field count
        "2,1,5.0,964982706\n"  # 5
    )
    (root / "ratings.csv.gz").write_bytes(gzip.compress(ratings.encode()))
    movies = (
        b"movieId,title,genres\n"
        b'1,"American President, The (1995)",Comedy|Drama|Romance\n'  # 2 quoted comma
        b"2,Bad \xff\xfe Bytes (1999),Drama\n"  # 3 invalid UTF-8 in the title
        b"3,Nothing (2000),(no genres listed)\n"  # 4
        b"four,Bad Id (2001),Drama\n"  # 5
    )
    (root / "movies.csv").write_bytes(movies)
    (root / "tags.csv").write_text(
        "userId,movieId,tag,timestamp\n1,1,Funny,1\n2,1,funny,2\n2,1,Politics,3\n1,3,dull,bad\n"
    )


def test_ml_latest_bad_rows(tmp_path: Path) -> None:
    write_ml_latest(tmp_path)
    assert detect_format(tmp_path) == "movielens-latest"
    ds = load_dataset(tmp_path)
    assert errors(ds) == {
        ("ratings.csv.gz", 3, "rating"),
        ("ratings.csv.gz", 4, "row"),
        ("movies.csv", 3, "title"),
        ("movies.csv", 5, "movieId"),
        ("tags.csv", 5, "timestamp"),
    }
    bad_bytes = next(e for e in ds.report.errors if e.file == "movies.csv" and e.line == 3)
    assert "invalid utf-8" in bad_bytes.reason.lower()
    assert ds.n_events == 2
    assert ds.item_ids.raw_ids == ["1", "3"]
    assert ds.items.row(0, named=True)["title"] == "American President, The (1995)"
    assert ds.items.row(0, named=True)["tags"] == ["funny", "politics"]
    assert ds.items.row(1, named=True)["categories"] == []
    assert ds.report.rows_read["movies.csv"] == 4 and ds.report.rows_kept["movies.csv"] == 2


def test_ml_latest_missing_catalog(tmp_path: Path) -> None:
    write_ml_latest(tmp_path)
    (tmp_path / "movies.csv").unlink()
    with pytest.raises(DataError, match="movies.csv"):
        load_movielens_latest(tmp_path)


# ---- planted bad rows: S3-Rec ------------------------------------------------------------
def test_s3rec_bad_rows(tmp_path: Path) -> None:
    text = "1 1 2 3\n2 4 x 5\n3\nu 1 2\n4 3 1\n"
    (tmp_path / "Toy.txt.gz").write_bytes(gzip.compress(text.encode()))
    (tmp_path / "Toy_item2attributes.json").write_text(json.dumps({"1": [7, 8], "2": [8], "9": [1], "x": [1], "3": "a"}))
    assert detect_format(tmp_path) == "s3rec"
    ds = load_s3rec(tmp_path)
    assert ds.name == "Toy"
    assert errors(ds) == {
        ("Toy.txt.gz", 2, "item"),
        ("Toy.txt.gz", 3, "row"),
        ("Toy.txt.gz", 4, "user"),
        ("Toy_item2attributes.json", 1, "x"),
        ("Toy_item2attributes.json", 1, "3"),
    }
    assert ds.n_users == 2 and ds.n_events == 5
    assert ds.user_ids.raw_ids == ["1", "4"]
    assert ds.item_ids.raw_ids == ["1", "2", "9", "3"]  # catalog (numeric order), then events
    items, ts = ds.history(ds.user_ids.get("4"))
    assert ds.item_ids.raws(items) == ["3", "1"] and ts.tolist() == [0, 1]
    # pos runs over every item token of the file (dropped lines included): 3 + 3 + 0 + 2
    # tokens precede line 5, whose items are tokens 8 and 9.
    assert ds.events.filter(pl.col("user") == 1)["pos"].to_list() == [8, 9]
    assert ds.items.row(0, named=True)["categories"] == ["7", "8"]


def test_s3rec_all_bad(tmp_path: Path) -> None:
    (tmp_path / "Toy.txt").write_text("a b c\n")
    with pytest.raises(DataError, match="Toy.txt"):
        load_s3rec(tmp_path)


# ---- generic tables -----------------------------------------------------------------------
def test_table_mapping_csv(tmp_path: Path) -> None:
    (tmp_path / "clicks.tsv").write_text(
        "uid\tsku\twhen\tkind\n"
        "a\tp1\t2024-01-02T10:00:00Z\tview\n"
        "a\tp2\t2024-01-02 10:05:00\tbuy\n"
        "b\tp1\tnot a time\tview\n"
        "\tp3\t2024-01-03\tview\n"
        "b\tp3\t2024-01-03\t\n"
    )
    (tmp_path / "catalog.csv").write_text(
        "sku,name,tags,cost,brand\np1,Pen,office;school,1.5,acme\np2,Ink,office,x,acme\np9,Pad,,2,zeta\n"
    )
    (tmp_path / "people.csv").write_text("id,age,city\na,31,Oslo\nb,,Rome\n")
    mapping = ColumnMapping(
        name="shop",
        events="clicks.tsv",
        delimiter="\t",
        user="uid",
        item="sku",
        timestamp="when",
        timestamp_format="iso",
        event="kind",
        items=ItemsMapping(file="catalog.csv", id="sku", title="name", categories="tags", category_sep=";", price="cost"),
        users=UsersMapping(file="people.csv", id="id"),
    )
    ds = load_dataset(tmp_path, mapping=mapping)
    assert ds.name == "shop"
    assert errors(ds) == {("clicks.tsv", 4, "when"), ("clicks.tsv", 5, "uid"), ("catalog.csv", 3, "cost")}
    assert ds.n_events == 3
    assert ds.events["event"].to_list() == ["view", "buy", "interaction"]
    assert ds.ts.tolist()[:2] == [1704189600, 1704189900]
    assert ds.item_ids.raw_ids == ["p1", "p9", "p2", "p3"]
    assert ds.items.row(0, named=True)["categories"] == ["office", "school"]
    assert ds.items.row(0, named=True)["brand"] == "acme"
    assert ds.users["age"].to_list() == [31, None] and ds.users["city"].to_list() == ["Oslo", "Rome"]


def test_table_parquet_and_default_mapping(tmp_path: Path) -> None:
    pl.DataFrame(
        {"user": ["u1", "u1", "u2"], "item": ["a", "b", "a"], "timestamp": [10, -1, 30], "value": [1.0, 2.0, 3.0]}
    ).write_parquet(tmp_path / "events.parquet")
    assert detect_format(tmp_path) == "table"
    ds = load_dataset(tmp_path)
    assert errors(ds) == {("events.parquet", 2, "timestamp")}
    assert ds.n_events == 2 and ds.value.tolist() == [1.0, 3.0]
    assert load_table(tmp_path / "events.parquet").n_events == 2


def test_stray_quote_costs_only_its_line(tmp_path: Path) -> None:
    (tmp_path / "events.csv").write_text(
        'user,item,timestamp,note\n1,a,1,"fine, quoted"\n1,b,2,"stray\n2,a,3,x\n2,b,4,y\nend"\n'
    )
    ds = load_dataset(tmp_path)
    assert ds.n_events == 4  # lines 2-5; a CSV parser would swallow 4-6 into line 3's note
    assert errors(ds) == {("events.csv", 6, "row")}


def test_optional_file_with_only_bad_rows(tmp_path: Path) -> None:
    write_ml100k(tmp_path)
    (tmp_path / "u.user").write_text("x|24|M|technician|85711\n")
    with pytest.raises(DataError, match="u.user"):
        load_movielens_100k(tmp_path)
    (tmp_path / "u.user").write_text("")  # empty: nothing to add, not an error
    assert load_movielens_100k(tmp_path).users.columns == ["user"]


def test_table_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="events.csv"):
        load_dataset(tmp_path)
    (tmp_path / "events.csv").write_text("user,item\n1,2\n")
    with pytest.raises(DataError, match="timestamp"):
        load_dataset(tmp_path)
    with pytest.raises(DataError, match="missing.csv"):
        load_table(tmp_path, ColumnMapping(events="missing.csv"))


def test_time_formats(tmp_path: Path) -> None:
    def parse(values: list[str], fmt: str) -> list[int | None]:
        return pl.select(time_expr(pl.lit(pl.Series(values)), fmt)).to_series().to_list()

    assert parse(["1700000000", "1700000000.9", "-1", "x"], "unix") == [1700000000, 1700000000, None, None]
    assert parse(["1700000000123"], "unix_ms") == [1700000000]
    assert parse(["2024-01-02T10:00:00Z", "2024-01-02T12:00:00+02:00", "2024-01-02", "2024-13-01"], "iso") == [
        1704189600, 1704189600, 1704153600, None,
    ]
    assert parse(["02/01/2024 10:00"], "%d/%m/%Y %H:%M") == [1704189600]
    # Native Parquet datetimes need no format.
    pl.DataFrame(
        {"user": ["u"], "item": ["i"], "timestamp": pl.Series([datetime(2024, 1, 2, 10)], dtype=pl.Datetime("ms"))}
    ).write_parquet(tmp_path / "events.parquet")
    assert load_table(tmp_path, ColumnMapping(timestamp_format="iso")).ts.tolist() == [1704189600]
