"""Seeded synthetic shop: a beauty catalogue and purchase sequences with real sequential structure.

The demo and the tests need data we may ship, and it must reward a sequential model: after a purchase a user
often buys one of its follow-up items, which only a model of event order can use; otherwise a slowly drifting
category taste and Zipf popularity pick the item. One seed gives byte-identical data.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import polars as pl

from recsys.durable import atomic_write
from recsys.settings import REPO_ROOT

PRESET_DIR = REPO_ROOT / "data" / "synthetic"

# (category path, product nouns, sizes, base price, adjective group); the order puts complete routines first,
# so presets with fewer categories still get chains (cleanse -> tone -> treat -> moisturise ...).
CATEGORIES: list[tuple[str, list[str], list[str], float, str]] = [
    (
        "Beauty > Skin Care > Cleansers",
        ["Foaming Cleanser", "Cleansing Gel", "Micellar Water"],
        ["150 ml", "400 ml"],
        12.0,
        "skin",
    ),
    ("Beauty > Skin Care > Toners", ["Toner", "Essence"], ["100 ml", "200 ml"], 15.0, "skin"),
    ("Beauty > Skin Care > Serums", ["Face Serum", "Eye Serum", "Ampoule"], ["15 ml", "30 ml"], 28.0, "skin"),
    (
        "Beauty > Skin Care > Moisturisers",
        ["Day Cream", "Night Cream", "Gel Moisturiser"],
        ["50 ml", "75 ml"],
        24.0,
        "skin",
    ),
    ("Beauty > Hair Care > Shampoo", ["Shampoo", "Dry Shampoo"], ["250 ml", "500 ml"], 9.0, "hair"),
    (
        "Beauty > Hair Care > Conditioner",
        ["Conditioner", "Leave-In Conditioner"],
        ["200 ml", "400 ml"],
        10.0,
        "hair",
    ),
    ("Beauty > Makeup > Foundation", ["Liquid Foundation", "Skin Tint"], ["30 ml", "40 ml"], 26.0, "makeup"),
    (
        "Beauty > Tools & Accessories > Brushes",
        ["Foundation Brush", "Powder Brush", "Brush Set"],
        ["1 pc", "5 pcs"],
        19.0,
        "tools",
    ),
    (
        "Beauty > Skin Care > Sun Care",
        ["Sun Fluid SPF 50", "Sun Cream SPF 30"],
        ["50 ml", "100 ml"],
        18.0,
        "skin",
    ),
    ("Beauty > Hair Care > Hair Masks", ["Hair Mask", "Hair Oil"], ["100 ml", "200 ml"], 14.0, "hair"),
    ("Beauty > Makeup > Mascara", ["Mascara", "Brow Gel"], ["8 ml", "10 ml"], 13.0, "makeup"),
    (
        "Beauty > Tools & Accessories > Sponges",
        ["Blending Sponge", "Cotton Pads"],
        ["3 pcs", "80 pcs"],
        7.0,
        "tools",
    ),
    ("Beauty > Makeup > Lips", ["Lipstick", "Lip Gloss", "Lip Balm"], ["3.5 g", "4 g"], 11.0, "makeup"),
    (
        "Beauty > Makeup > Makeup Remover",
        ["Makeup Remover", "Cleansing Balm"],
        ["100 ml", "125 ml"],
        12.0,
        "makeup",
    ),
    ("Beauty > Bath & Body > Body Wash", ["Shower Gel", "Body Wash"], ["250 ml", "500 ml"], 8.0, "body"),
    (
        "Beauty > Bath & Body > Body Lotion",
        ["Body Lotion", "Body Butter"],
        ["200 ml", "400 ml"],
        12.0,
        "body",
    ),
    (
        "Beauty > Fragrance > Eau de Parfum",
        ["Eau de Parfum", "Eau de Toilette"],
        ["30 ml", "50 ml"],
        55.0,
        "fragrance",
    ),
]
# The routine step after each category (by leaf name); a next step outside the preset falls back to itself.
NEXT_STEP = {
    "Cleansers": "Toners",
    "Toners": "Serums",
    "Serums": "Moisturisers",
    "Moisturisers": "Sun Care",
    "Sun Care": "Cleansers",
    "Shampoo": "Conditioner",
    "Conditioner": "Hair Masks",
    "Hair Masks": "Shampoo",
    "Foundation": "Brushes",
    "Brushes": "Sponges",
    "Sponges": "Foundation",
    "Mascara": "Makeup Remover",
    "Lips": "Makeup Remover",
    "Makeup Remover": "Cleansers",
    "Body Wash": "Body Lotion",
    "Body Lotion": "Eau de Parfum",
    "Eau de Parfum": "Body Lotion",
}
ADJECTIVES = {
    "skin": ["Hydrating", "Brightening", "Gentle", "Soothing", "Renewing", "Balancing", "Firming", "Calming"],
    "hair": ["Repairing", "Volumising", "Smoothing", "Nourishing", "Strengthening", "Clarifying"],
    "makeup": ["Long-Wear", "Matte", "Radiant", "Natural", "Velvet", "Waterproof"],
    "tools": ["Soft-Touch", "Professional", "Travel", "Essential", "Precision"],
    "body": ["Nourishing", "Refreshing", "Silky", "Revitalising", "Comforting"],
    "fragrance": ["Floral", "Woody", "Citrus", "Amber", "Fresh"],
}
BRANDS = [
    "Lumina", "Verdana", "Aurelle", "Solis", "Nordique", "Maison Clair",
    "Petal & Pine", "Oakridge", "Celeste", "Bloomwell", "Kinfolk Labs", "Marisol",
]  # fmt: skip


@dataclass(frozen=True)
class SyntheticPreset:
    """Sizes and behaviour knobs of one synthetic dataset (stored as JSON in ``data/synthetic/``)."""

    name: str = "default"
    n_users: int = 3000
    n_items: int = 600
    n_categories: int = 12
    min_length: int = 5
    max_length: int = 60
    mean_length: float = 25.0
    follow_up_prob: float = 0.5  # P(next purchase is a follow-up of the previous one)
    min_follow_ups: int = 1
    max_follow_ups: int = 3
    preference_alpha: float = 0.3  # Dirichlet concentration of a user's category taste (small = focused)
    preference_drift: float = 0.03  # per purchase, weight of a fresh taste draw mixed into the current one
    zipf_exponent: float = 1.0  # item popularity within a category ~ rank ** -exponent
    start_time: int = 1704067200  # 2024-01-01T00:00:00Z: first possible event
    start_spread_days: float = 365.0  # users start uniformly within this window
    mean_gap_hours: float = 60.0  # mean time between a user's purchases (exponential)

    def __post_init__(self) -> None:
        if not 1 <= self.n_categories <= len(CATEGORIES):
            raise ValueError(f"n_categories must be in 1..{len(CATEGORIES)}, got {self.n_categories}")
        if self.n_items < 2 * self.n_categories:
            raise ValueError(f"n_items ({self.n_items}) must be at least 2 per category ({self.n_categories})")
        if not 1 <= self.min_length <= self.max_length:
            raise ValueError(f"need 1 <= min_length <= max_length, got {self.min_length}, {self.max_length}")
        if not 1 <= self.min_follow_ups <= self.max_follow_ups:
            raise ValueError("need 1 <= min_follow_ups <= max_follow_ups")
        if not 0.0 <= self.follow_up_prob <= 1.0 or not 0.0 <= self.preference_drift <= 1.0:
            raise ValueError("follow_up_prob and preference_drift must be in [0, 1]")
        if self.n_users < 1:
            raise ValueError(f"n_users must be >= 1, got {self.n_users}")

    @classmethod
    def from_json(cls, path: str | Path) -> SyntheticPreset:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known - {"description"})
        if unknown:
            raise ValueError(f"{path}: unknown preset field(s) {unknown}; known: {sorted(known)}")
        return cls(**{k: v for k, v in data.items() if k in known})


def load_preset(name_or_path: str | Path) -> SyntheticPreset:
    """A preset by name (``data/synthetic/<name>.json``) or by path to a JSON file."""
    path = Path(name_or_path)
    if path.suffix == ".json" or path.exists():
        if not path.exists():
            raise FileNotFoundError(f"synthetic preset file not found: {path}")
        return SyntheticPreset.from_json(path)
    candidate = PRESET_DIR / f"{name_or_path}.json"
    if not candidate.exists():
        available = sorted(p.stem for p in PRESET_DIR.glob("*.json"))
        raise ValueError(f"unknown synthetic preset {str(name_or_path)!r}; available: {available} or a .json path")
    return SyntheticPreset.from_json(candidate)


@dataclass
class World:
    """The hidden structure behind the data: catalogue, item categories, popularity, follow-ups."""

    catalogue: pl.DataFrame
    item_category: np.ndarray  # (n_items,) category index
    category_items: np.ndarray  # (n_categories, max_per_category) item indices, -1 padded
    category_cdf: np.ndarray  # (n_categories, max_per_category) Zipf CDF within category, 1.0 padded
    follow_ups: np.ndarray  # (n_items, max_follow_ups) item indices, -1 padded
    n_follow_ups: np.ndarray  # (n_items,)

    @property
    def item_ids(self) -> list[str]:
        return self.catalogue["item_id"].to_list()


def _rngs(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """Independent streams for the world and for the users, so the world alone can be rebuilt."""
    return np.random.default_rng([seed, 0]), np.random.default_rng([seed, 1])


def _split_sizes(total: int, parts: int, rng: np.random.Generator) -> np.ndarray:
    """Category sizes: an even split with a little random variation, at least 2 each, summing to total."""
    weights = rng.dirichlet(np.full(parts, 8.0))
    sizes = np.maximum(2, np.floor(weights * total).astype(np.int64))
    while sizes.sum() != total:  # settle rounding one item at a time (a few steps at most)
        i = int(np.argmax(sizes)) if sizes.sum() > total else int(np.argmin(sizes))
        sizes[i] += 1 if sizes.sum() < total else -1
    return sizes


def build_world(preset: SyntheticPreset, seed: int) -> World:
    """The catalogue and hidden structure for a seed (the same as :func:`generate` uses).

    A catalogue row states only facts of its own record, so ad copy learned from it has nothing to invent from.
    """
    rng, _ = _rngs(seed)
    cats = CATEGORIES[: preset.n_categories]
    sizes = _split_sizes(preset.n_items, len(cats), rng)

    columns: dict[str, list] = {k: [] for k in ("cat", "brand", "adj", "noun", "size", "base")}
    for c, ((_, nouns, unit_sizes, base, group), k) in enumerate(zip(cats, sizes, strict=True)):
        adjectives = ADJECTIVES[group]
        space = len(BRANDS) * len(adjectives) * len(nouns) * len(unit_sizes)
        if k > space:
            raise ValueError(f"{k} items do not fit category {cats[c][0]!r} ({space} distinct titles)")
        combos = rng.choice(space, size=k, replace=False)
        b, a, n, s = np.unravel_index(combos, (len(BRANDS), len(adjectives), len(nouns), len(unit_sizes)))
        columns["cat"] += [c] * k
        columns["brand"] += [BRANDS[i] for i in b]
        columns["adj"] += [adjectives[i] for i in a]
        columns["noun"] += [nouns[i] for i in n]
        columns["size"] += [unit_sizes[i] for i in s]
        columns["base"] += [base * (1.0 + 0.35 * i) for i in s]  # bigger sizes cost more

    # SKU numbers are shuffled so an ID says nothing about the category
    order = rng.permutation(preset.n_items)
    item_category = np.asarray(columns["cat"], dtype=np.int64)[order]
    price = np.asarray(columns["base"])[order] * rng.lognormal(0.0, 0.3, preset.n_items)
    price = np.maximum(1.99, np.round(price) - 0.01)
    frame = pl.DataFrame({k: [v[i] for i in order] for k, v in columns.items() if k != "base"})
    catalogue = frame.select(
        pl.format("SKU-{}", pl.int_range(1, pl.len() + 1).cast(pl.String).str.zfill(5)).alias("item_id"),
        pl.concat_str("brand", "adj", "noun", "size", separator=" ").alias("title"),
        pl.Series("price", price).alias("_price"),
        pl.Series("category", [cats[c][0] for c in item_category]).alias("category"),
        "brand",
        "adj",
        "noun",
        "size",
    ).select(
        "item_id",
        "title",
        pl.format(
            "{} {} by {}, {}. Category: {}. Price: {}.",
            "adj",
            "noun",
            "brand",
            "size",
            "category",
            pl.col("_price").round(2).cast(pl.String),
        ).alias("description"),
        "category",
        "brand",
        pl.col("_price").round(2).alias("price"),
    )

    # items per category with a Zipf popularity over a random rank order
    width = int(np.bincount(item_category).max())
    category_items = np.full((len(cats), width), -1, dtype=np.int64)
    category_cdf = np.ones((len(cats), width))
    for c in range(len(cats)):
        members = rng.permutation(np.flatnonzero(item_category == c))
        weights = np.arange(1, len(members) + 1, dtype=float) ** -preset.zipf_exponent
        category_items[c, : len(members)] = members
        category_cdf[c, : len(members)] = np.cumsum(weights) / weights.sum()
        category_cdf[c, len(members) - 1] = 1.0  # rounding must never let a draw fall into the padding

    # follow-ups: the first is in the routine's next category (same brand when there is one), the others in
    # the next or the same category; never the item itself
    leaf_index = {path.rsplit(" > ", 1)[1]: i for i, (path, *_rest) in enumerate(cats)}
    next_category = np.asarray(
        [leaf_index.get(NEXT_STEP.get(path.rsplit(" > ", 1)[1], ""), c) for c, (path, *_r) in enumerate(cats)]
    )
    brands = catalogue["brand"].to_numpy()
    follow_ups = np.full((preset.n_items, preset.max_follow_ups), -1, dtype=np.int64)
    n_follow_ups = rng.integers(preset.min_follow_ups, preset.max_follow_ups + 1, preset.n_items)
    for item in range(preset.n_items):
        nxt = next_category[item_category[item]]
        pool_next = np.flatnonzero((item_category == nxt) & (np.arange(preset.n_items) != item))
        same_brand = pool_next[brands[pool_next] == brands[item]]
        chosen = [int(rng.choice(same_brand if len(same_brand) else pool_next))]
        pool_any = np.flatnonzero(
            np.isin(item_category, [nxt, item_category[item]]) & (np.arange(preset.n_items) != item)
        )
        pool_any = pool_any[~np.isin(pool_any, chosen)]
        extra = rng.choice(pool_any, size=min(n_follow_ups[item] - 1, len(pool_any)), replace=False)
        chosen += [int(i) for i in extra]
        follow_ups[item, : len(chosen)] = chosen
        n_follow_ups[item] = len(chosen)
    return World(catalogue, item_category, category_items, category_cdf, follow_ups, n_follow_ups)


def _lengths(preset: SyntheticPreset, rng: np.random.Generator) -> np.ndarray:
    """Sequence lengths: lognormal around ``mean_length``, clipped to [min_length, max_length]."""
    sigma = 0.6
    mu = np.log(preset.mean_length) - sigma**2 / 2
    raw = np.rint(rng.lognormal(mu, sigma, preset.n_users)).astype(np.int64)
    return np.clip(raw, preset.min_length, preset.max_length)


def _draw(cdf_rows: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Inverse-CDF sampling, one draw per row: the first column whose CDF reaches u."""
    return np.minimum((cdf_rows < u[:, None]).sum(axis=1), cdf_rows.shape[1] - 1)


def generate(preset: SyntheticPreset, seed: int = 0) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Events (user_id, item_id, timestamp, event_type, value) and the catalogue for one seed.

    Steps are simulated for all users at once (one vectorised step per position), so the cost is
    max_length numpy steps, not one Python step per event. Events come out as a log: sorted by time.
    ``value`` is the price paid; ``event_type`` is always "purchase".
    """
    world = build_world(preset, seed)
    _, rng = _rngs(seed)
    n_users, n_cat = preset.n_users, preset.n_categories
    lengths = _lengths(preset, rng)
    alpha = np.full(n_cat, preset.preference_alpha)
    taste = rng.dirichlet(alpha, n_users)
    items = np.full((n_users, preset.max_length), -1, dtype=np.int64)
    prev = np.full(n_users, -1, dtype=np.int64)
    for t in range(preset.max_length):
        u_follow, u_pick, u_cat, u_item = rng.random((4, n_users))
        category = _draw(np.cumsum(taste, axis=1), u_cat)
        chosen = world.category_items[category, _draw(world.category_cdf[category], u_item)]
        follow = (prev >= 0) & (u_follow < preset.follow_up_prob)
        safe_prev = np.maximum(prev, 0)
        pick = np.floor(u_pick * world.n_follow_ups[safe_prev]).astype(np.int64)
        chosen = np.where(follow, world.follow_ups[safe_prev, pick], chosen)
        items[:, t] = np.where(t < lengths, chosen, -1)
        prev = chosen
        taste = (1 - preset.preference_drift) * taste + preset.preference_drift * rng.dirichlet(alpha, n_users)

    gaps = rng.exponential(preset.mean_gap_hours * 3600.0, (n_users, preset.max_length)) + 60.0
    starts = preset.start_time + rng.uniform(0, preset.start_spread_days * 86400.0, n_users)
    times = (starts[:, None] + np.cumsum(gaps, axis=1)).astype(np.int64)

    mask = items >= 0
    user_index = np.broadcast_to(np.arange(n_users)[:, None], items.shape)[mask]
    item_index = items[mask]
    item_ids = world.catalogue["item_id"]
    prices = world.catalogue["price"]
    events = (
        pl.DataFrame(
            {
                "user_id": pl.Series(user_index + 1).cast(pl.String).str.zfill(5),
                "item_id": item_ids.gather(item_index),
                "timestamp": times[mask],
                "value": prices.gather(item_index),
            }
        )
        .select(
            pl.format("U-{}", "user_id").alias("user_id"),
            "item_id",
            pl.col("timestamp").cast(pl.Int64),
            pl.lit("purchase").alias("event_type"),
            "value",
        )
        .sort("timestamp", "user_id", maintain_order=True)
    )
    return events, world.catalogue


def write_synthetic(
    out_dir: str | Path,
    preset_name_or_path: str | Path = "default",
    seed: int = 0,
    n_users: int | None = None,
) -> tuple[Path, Path]:
    """Generate a preset (optionally with another user count) and write ``events.csv``, ``catalogue.csv``.

    The CSVs are what an operator's export would look like, so the demo goes through the same CSV importer
    and validation as real data. Returns (events_csv_path, catalogue_csv_path).
    """
    preset = load_preset(preset_name_or_path)
    if n_users is not None:
        preset = SyntheticPreset(**{**asdict(preset), "n_users": n_users})
    events, catalogue = generate(preset, seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    events_path, catalogue_path = out / "events.csv", out / "catalogue.csv"
    atomic_write(events_path, events.write_csv)
    atomic_write(catalogue_path, catalogue.write_csv)
    return events_path, catalogue_path
