"""Catalogue rows as clean item records: the only facts ad copy may state about an item.

Why a separate, cleaned record: catalogues pack several fields into the title (Amazon's RecBole ``.text`` is
"<product title>. <category words>. <brand>."), prices arrive as floats or strings and optional fields are
missing or blank. Grounding and the fallback template need one tidy view: the product name alone, the brand,
the category path, a price and the seller description.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from recsys.adcopy._text import squash

__all__ = ["ItemRecord", "format_price", "records_from_catalogue"]


def format_price(price: float) -> str:
    """The one way a price is written, in facts and in the template, so a quoted price is always grounded."""
    return f"{price:.2f}"


@dataclass(frozen=True)
class ItemRecord:
    """One catalogue item, cleaned: what copy about it may say (hashable, so checks can cache per record)."""

    item_id: str
    name: str  # the product name only (the packed category words and brand of a RecBole title removed)
    brand: str | None
    categories: tuple[str, ...]  # category path parts, most general first
    price: float | None
    description: str | None

    @property
    def price_text(self) -> str | None:
        """The price as facts and the template write it ("24.99"), or None."""
        return None if self.price is None else format_price(self.price)

    @property
    def leaf(self) -> str | None:
        """The most specific category part, or None."""
        return self.categories[-1] if self.categories else None

    def facts_text(self) -> str:
        """Name, brand, category path, price and description: everything grounding checks copy against."""
        parts = [self.name, self.brand, " > ".join(self.categories), self.price_text, self.description]
        return "\n".join(p for p in parts if p)


def _clean(column: str, schema: pl.Schema) -> pl.Expr:
    """A string column stripped, blanks as null; a missing optional column becomes all null."""
    if column not in schema:
        return pl.lit(None, dtype=pl.String)
    text = pl.col(column).cast(pl.String).str.strip_chars()
    return pl.when(text.str.len_chars() > 0).then(text)


def _price(schema: pl.Schema) -> pl.Expr:
    """Float prices as they are; string prices with currency signs, commas and spaces removed."""
    if "price" not in schema:
        return pl.lit(None, dtype=pl.Float64)
    if schema["price"].is_numeric():
        price = pl.col("price").cast(pl.Float64)
    else:
        text = pl.col("price").cast(pl.String).str.replace_all(r"[^0-9.\-]", "")
        price = text.cast(pl.Float64, strict=False)
    return pl.when(price.is_finite() & (price >= 0)).then(price)


def _name(title: pl.Expr, brand: pl.Expr, categories: pl.Expr) -> pl.Expr:
    """The product title alone, for titles packed as "<title>. <category words>. <brand>.".

    The spec'd rule is "split on '. ' into >= 3 parts and the last part is the brand: drop the last two".
    Written as "the title (trailing dots ignored) ends with '. <brand>' and the rest still holds a '. '", it
    also covers brands containing ". " ("Mr. Heater", "J.V. Converting") and empty category words
    (". . WD-40."). Without a brand, a title ending ". <category words>. ." or ". . ." loses that tail; a
    title truncated before its brand ("...Grinding Wheels…") is cut before ". <top category> ". Anything
    else keeps the title.
    """
    bare = title.str.strip_chars_end(". ")
    lower = bare.str.to_lowercase()
    suffix = pl.concat_str(pl.lit(". "), brand.str.strip_chars_end(". ").str.to_lowercase())
    rest = bare.str.slice(0, bare.str.len_chars() - suffix.str.len_chars())
    packed = lower.str.ends_with(suffix) & rest.str.contains(". ", literal=True)
    root = pl.concat_str(pl.lit(". "), categories.list.first().str.to_lowercase(), pl.lit(" "))
    at = lower.str.find(root, literal=True)
    no_brand = brand.is_null() & title.str.contains(r"\. (?:[^.]*\.)? \.$")  # "<title>. <cat>. ." / ". . ."
    name = (
        pl.when(packed.fill_null(False))
        .then(rest.str.replace(r"\.\s[^.]*$", ""))
        .when(no_brand)
        .then(title.str.replace(r"\. (?:[^.]*\.)? \.$", ""))
        .when(at.fill_null(0) > 0)
        .then(title.str.slice(0, at))
        .otherwise(title)
        .str.strip_chars()
    )
    return pl.when(name.str.len_chars() > 0).then(name).otherwise(title)


def records_from_catalogue(catalogue: pl.DataFrame) -> dict[str, ItemRecord]:
    """Item records keyed by item_id (``item_id`` and ``title`` required; ``description``, ``category`` as
    "A > B > C", ``brand`` and ``price`` optional). Cleaning is vectorised; only the dataclasses are built in
    Python. A duplicated item_id keeps its first row."""
    missing = {"item_id", "title"} - set(catalogue.columns)
    if missing:
        raise ValueError(f"catalogue lacks required column(s): {', '.join(sorted(missing))}")
    schema = catalogue.schema
    brand = _clean("brand", schema)
    parts = _clean("category", schema).str.split(">").list.eval(pl.element().str.strip_chars())
    categories = parts.list.filter(pl.element().str.len_chars() > 0)
    cleaned = (
        catalogue.select(
            _clean("item_id", schema).alias("item_id"),
            _clean("title", schema).alias("title"),
            brand.alias("brand"),
            categories.alias("categories"),
            _price(schema).alias("price"),
            _clean("description", schema).alias("description"),
        )
        .filter(pl.col("item_id").is_not_null() & pl.col("title").is_not_null())
        .unique("item_id", keep="first", maintain_order=True)
        .with_columns(_name(pl.col("title"), pl.col("brand"), pl.col("categories")).alias("name"))
    )
    records: dict[str, ItemRecord] = {}
    for item_id, name, brand_, cats, price, description in cleaned.select(
        "item_id", "name", "brand", "categories", "price", "description"
    ).iter_rows():
        records[item_id] = ItemRecord(
            item_id=item_id,
            name=squash(name),
            brand=squash(brand_) if brand_ else None,
            categories=tuple(squash(c) for c in cats or ()),
            price=price,
            description=description,
        )
    return records
