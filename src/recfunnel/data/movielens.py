"""MovieLens loaders: ML-100K (`u.data`, `u.item`, `u.user`) and ML-latest (CSV files).

Every rating is one event (event="rating", value=the rating); ids are integers in these
files and are checked as such. The events file and the catalog are required, the rest
(users, genre names, tags) is optional. A bad row is reported and skipped (see
`textio`), so one broken line never costs the whole import.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from recfunnel.data.assemble import assemble
from recfunnel.data.dataset import Dataset
from recfunnel.data.textio import (
    ROW,
    Field,
    check_fields,
    display_name,
    float_field,
    id_field,
    int_field,
    int_id_field,
    load_delimited,
    locate,
    read_bytes,
    require,
    time_expr,
    time_field,
)
from recfunnel.data.validation import LoadReport

# The order of the 19 flags in u.item, used when u.genre is absent.
ML100K_GENRES = [
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
    "Romance", "Sci-Fi", "Thriller", "War", "Western",
]
NO_GENRES = "(no genres listed)"


def _finish(file: str, frame: pl.DataFrame, report: LoadReport, optional: bool = False) -> None:
    """Count the kept rows; a file whose rows are all bad is an error (an empty optional
    file is not: it just adds nothing)."""
    report.kept(file, frame.height)
    if not (optional and report.rows_read[file] == 0):
        report.require_rows(file)


def _rating_events(frame: pl.DataFrame, user: str, item: str, rating: str, ts: str) -> pl.DataFrame:
    return frame.select(
        user=pl.col(user),
        item=pl.col(item),
        ts=pl.col(ts),
        event=pl.lit("rating"),
        value=pl.col(rating),
        pos=pl.col(ROW),
    )


# ---- ML-100K ----------------------------------------------------------------------------
def load_movielens_100k(path: str | Path) -> Dataset:
    """ML-100K from a folder with `u.data[.gz]`, `u.item` and optionally `u.user`, `u.genre`."""
    root = Path(path)
    report = LoadReport()
    events = _ml100k_events(root, report)
    items = _ml100k_items(root, report, _ml100k_genres(root))
    users = _ml100k_users(root, report)
    return assemble("ml-100k", events, items, users, report)


def _ml100k_events(root: Path, report: LoadReport) -> pl.DataFrame:
    cols = ["user", "item", "rating", "timestamp"]
    frame, file = load_delimited(require(root, "u.data"), root, report, sep="\t", columns=cols)
    frame = check_fields(
        frame, file, report,
        [int_id_field("user"), int_id_field("item"), float_field("rating"), time_field("timestamp")],
    )
    _finish(file, frame, report)
    return _rating_events(frame, "user", "item", "rating", "timestamp")


def _ml100k_genres(root: Path) -> list[str]:
    """Genre names in flag order from u.genre (`name|index`), else the published list."""
    path = locate(root, "u.genre")
    if path is None:
        return list(ML100K_GENRES)
    pairs = []
    for line in read_bytes(path).decode("latin-1").splitlines():
        name, _, idx = line.strip().rpartition("|")
        if name and idx.isdigit():
            pairs.append((int(idx), name))
    return [name for _, name in sorted(pairs)] or list(ML100K_GENRES)


def _flag_field(name: str) -> Field:
    def parse(e: pl.Expr) -> pl.Expr:
        x = e.str.strip_chars()
        return pl.when(x.is_in(["0", "1"])).then(x)

    return Field(name, parse, lambda raw: f"genre flag must be 0 or 1, found {raw!r}")


def _ml100k_items(root: Path, report: LoadReport, genres: list[str]) -> pl.DataFrame:
    cols = ["item", "title", "release", "video_release", "url", *genres]
    # latin-1 decodes every byte, so this file never loses a row to its encoding.
    frame, file = load_delimited(require(root, "u.item"), root, report, sep="|", columns=cols, encoding="latin-1")
    frame = check_fields(frame, file, report, [int_id_field("item"), *[_flag_field(g) for g in genres]])
    _finish(file, frame, report)
    flags = [pl.when(pl.col(g) == "1").then(pl.lit(g)) for g in genres]
    return frame.select(
        item=pl.col("item"),
        title=pl.col("title"),
        categories=pl.concat_list(flags).list.drop_nulls(),
        # An empty or odd release date means "unknown", not a bad row.
        created=time_expr(pl.col("release"), "%d-%b-%Y", allow_negative=True),
    )


def _ml100k_users(root: Path, report: LoadReport) -> pl.DataFrame | None:
    path = locate(root, "u.user")
    if path is None:
        return None
    cols = ["user", "age", "gender", "occupation", "zip"]
    frame, file = load_delimited(path, root, report, sep="|", columns=cols, encoding="latin-1")
    frame = check_fields(frame, file, report, [int_id_field("user"), int_field("age")])
    _finish(file, frame, report, optional=True)
    return frame.select(cols)


# ---- ML-latest ---------------------------------------------------------------------------
def load_movielens_latest(path: str | Path) -> Dataset:
    """ML-latest(-small) from `ratings.csv[.gz]`, `movies.csv[.gz]`, optional `tags.csv[.gz]`.

    Categories are the genres only; the distinct lower-cased tags of a movie go to the
    extra items column `tags` (free text would swamp the genre vocabulary).
    """
    root = Path(path)
    report = LoadReport()
    events = _latest_events(root, report)
    items = _latest_items(root, report)
    tags = _latest_tags(root, report)
    if tags is not None:
        items = items.join(tags, on="item", how="left", maintain_order="left")
    else:
        items = items.with_columns(tags=pl.lit(None, dtype=pl.List(pl.Utf8)))
    ds = assemble(root.name or "ml-latest", events, items, None, report)
    ds.items = ds.items.with_columns(pl.col("tags").fill_null(pl.lit([], dtype=pl.List(pl.Utf8))))
    return ds


def _latest_events(root: Path, report: LoadReport) -> pl.DataFrame:
    need = ["userId", "movieId", "rating", "timestamp"]
    frame, file = load_delimited(
        require(root, "ratings.csv"), root, report, sep=",", header=True, quoted=True, required=need
    )
    frame = check_fields(
        frame, file, report,
        [int_id_field("userId"), int_id_field("movieId"), float_field("rating"), time_field("timestamp")],
    )
    _finish(file, frame, report)
    return _rating_events(frame, "userId", "movieId", "rating", "timestamp")


def _latest_items(root: Path, report: LoadReport) -> pl.DataFrame:
    need = ["movieId", "title", "genres"]
    frame, file = load_delimited(
        require(root, "movies.csv"), root, report, sep=",", header=True, quoted=True, required=need
    )
    frame = check_fields(frame, file, report, [int_id_field("movieId")])
    _finish(file, frame, report)
    genres = pl.col("genres").str.split("|").list.eval(
        pl.element().str.strip_chars().filter((pl.element() != "") & (pl.element() != NO_GENRES))
    )
    return frame.select(item=pl.col("movieId"), title=pl.col("title"), categories=genres)


def _latest_tags(root: Path, report: LoadReport) -> pl.DataFrame | None:
    path = locate(root, "tags.csv")
    if path is None:
        return None
    need = ["userId", "movieId", "tag", "timestamp"]
    frame, file = load_delimited(path, root, report, sep=",", header=True, quoted=True, required=need)
    frame = check_fields(
        frame, file, report,
        [int_id_field("userId"), int_id_field("movieId"), id_field("tag"), time_field("timestamp")],
    )
    _finish(file, frame, report, optional=True)
    return (
        frame.select(item=pl.col("movieId"), tag=pl.col("tag").str.to_lowercase())
        .unique(maintain_order=True)
        .group_by("item", maintain_order=True)
        .agg(tags=pl.col("tag").sort())
    )
