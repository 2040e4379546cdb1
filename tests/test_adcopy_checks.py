"""The torch-free ad-copy safety core: records, grounding, claims filter, fallback template and interests.

Real small catalogues: the project's own synthetic generator (tiny preset) and a handmade catalogue with
Amazon-style packed titles; the Scientific catalogue too when /work/shared/data is present.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from recsys.adcopy import (
    CatalogueFacts,
    Copy,
    Fact,
    ItemRecord,
    check_copy,
    claim_violations,
    history_interests,
    names_interest,
    records_from_catalogue,
    shared_interest,
    template_copy,
    unsupported_facts,
)
from recsys.data.synthetic import generate, load_preset

SCIENTIFIC = Path("/work/shared/data/amazon-scientific")


@pytest.fixture(scope="module")
def synthetic() -> tuple[dict[str, ItemRecord], CatalogueFacts]:
    _, catalogue = generate(load_preset("tiny"), seed=0)
    records = records_from_catalogue(catalogue)
    return records, CatalogueFacts.from_records(records.values())


@pytest.fixture(scope="module")
def handmade() -> tuple[dict[str, ItemRecord], CatalogueFacts]:
    catalogue = pl.DataFrame(
        {
            "item_id": ["G1", "D1", "P1", "B1", "M1"],
            "title": [
                "Gorilla Original Gorilla Glue, Waterproof Polyurethane Glue, 8 ounce Bottle, Brown. Industrial & "
                "Scientific Tapes, Adhesives & Sealants Urethane Adhesives. Gorilla.",
                "Dynarex Nitrile Exam Gloves, Black, X-Large, 100 Count. Industrial & Scientific Professional "
                "Medical Supplies Exam Gloves. Dynarex.",
                "PORTER-CABLE 740000801 4 1/2-Inch x 10yd 80 Grit Adhesive-Backed Sanding Roll. Industrial & "
                "Scientific Abrasive & Finishing Products Manual Sanding Products Sanding Rolls. PORTER-CABLE.",
                "Best Choice 100% Waterproof Duct Tape for Men, 2 in x 60 yd",
                "Mr. Heater Propane Connector Kit 3/8 Male Pipe Thread. Industrial & Scientific Hydraulics, "
                "Pneumatics & Plumbing Fittings Pipe Fittings. Mr. Heater.",
            ],
            "description": [
                "Water activated polyurethane formula. Clamp objects for 1 hour; allow 24 hours to cure.",
                "Powder-free nitrile exam gloves, 100 per box.",
                None,
                "  ",
                "Connects a propane cylinder to a heater.",
            ],
            "category": [
                "Industrial & Scientific > Tapes > Adhesives & Sealants > Urethane Adhesives",
                "Industrial & Scientific > Professional Medical Supplies > Exam Gloves",
                "Industrial & Scientific > Abrasive & Finishing Products > Manual Sanding Products > Sanding Rolls",
                "Industrial & Scientific > Tapes > Duct Tape",
                "Industrial & Scientific > Hydraulics, Pneumatics & Plumbing > Fittings > Pipe Fittings",
            ],
            "brand": ["Gorilla", "Dynarex", "PORTER-CABLE", "Best Choice Products", "Mr. Heater"],
            "price": [None, "$12.50", "1,299.00", "N/A", "7"],
        }
    )
    records = records_from_catalogue(catalogue)
    return records, CatalogueFacts.from_records(records.values())


# ------------------------------------------------------------------------------------------------ records


def test_packed_titles_keep_only_the_product_name(handmade) -> None:
    records, _ = handmade
    assert records["G1"].name == "Gorilla Original Gorilla Glue, Waterproof Polyurethane Glue, 8 ounce Bottle, Brown"
    assert records["D1"].name == "Dynarex Nitrile Exam Gloves, Black, X-Large, 100 Count"
    assert records["P1"].name == "PORTER-CABLE 740000801 4 1/2-Inch x 10yd 80 Grit Adhesive-Backed Sanding Roll"
    assert records["M1"].name == "Mr. Heater Propane Connector Kit 3/8 Male Pipe Thread"  # brand with ". " inside
    assert records["B1"].name == "Best Choice 100% Waterproof Duct Tape for Men, 2 in x 60 yd"  # not packed: kept
    gorilla = records["G1"]
    assert gorilla.categories == ("Industrial & Scientific", "Tapes", "Adhesives & Sealants", "Urethane Adhesives")
    assert gorilla.brand == "Gorilla" and gorilla.leaf == "Urethane Adhesives"
    assert [records[i].price for i in ("G1", "D1", "P1", "B1", "M1")] == [None, 12.5, 1299.0, None, 7.0]
    assert records["P1"].description is None and records["B1"].description is None  # missing and blank
    facts = records["D1"].facts_text()
    assert "Dynarex" in facts and "Exam Gloves" in facts and "12.50" in facts and "100 per box" in facts


def test_synthetic_records_and_catalogue_facts(synthetic) -> None:
    records, facts = synthetic
    record = records["SKU-00002"]
    assert record.name == "Kinfolk Labs Balancing Eye Serum 30 ml" and record.brand == "Kinfolk Labs"
    assert record.categories == ("Beauty", "Skin Care", "Serums") and record.price == 28.99
    assert "Price: 28.99." in record.facts_text() and record.price_text == "28.99"
    assert facts.category_share["beauty"] == 1.0 and 0 < facts.category_share["serums"] < 0.3
    assert {"lumina", "kinfolk labs", "petal & pine"} <= facts.brands
    assert {"serum", "toner", "cleanser", "shampoo", "brush"} <= facts.product_nouns
    assert not facts.product_nouns & {"beauty", "care", "skin", "hydrating", "ml", "picked", "interest"}
    assert CatalogueFacts.from_json(facts.to_json()) == facts


def test_records_need_item_id_and_title() -> None:
    with pytest.raises(ValueError, match="title"):
        records_from_catalogue(pl.DataFrame({"item_id": ["a"]}))
    only = records_from_catalogue(pl.DataFrame({"item_id": ["a", "a"], "title": ["Steel Bolt", "Other"]}))
    assert only == {"a": ItemRecord("a", "Steel Bolt", None, (), None, None)}


# ------------------------------------------------------------------------------------------------ claims

ADVERSARIAL = [
    ("GUARANTEED to stick", "guarantee"),  # case
    ("Ｂｅｓｔ serum ever", "superlative"),  # fullwidth
    ("𝐁𝐞𝐬𝐭 serum", "superlative"),  # mathematical bold
    ("gua\u200branteed results", "guarantee"),  # zero-width space
    ("guar\u00adanteed", "guarantee"),  # soft hyphen
    ("c u r e s acne", "health"),  # spaced letters
    ("the b.e.s.t glue", "superlative"),  # dotted letters
    ("guar-anteed", "guarantee"),  # hyphen inside a word
    ("wo_men love it", "protected_attribute"),  # underscore inside a word
    ("b3st glue", "superlative"),  # leetspeak
    ("gu4r4nt33d", "guarantee"),
    ("k1lls germs", "health"),
    ("u1timate kit", "superlative"),
    ("$uper glue, be$t price", "superlative"),
    ("beeeest ever", "superlative"),  # repeated letters
    ("guaranteeeed", "guarantee"),
    ("bеst (Cyrillic e)", "superlative"),  # homoglyph
    ("bést glue", "superlative"),  # diacritic
    ("heals wounds fast", "health"),
    ("treats eczema", "health"),
    ("prevents infection", "health"),
    ("relieves pain", "health"),
    ("clinically proven", "health"),
    ("FDA approved", "health"),
    ("doctor-recommended", "health"),
    ("boosts immunity", "health"),
    ("detox tea", "health"),
    ("anti-aging cream", "health"),
    ("kills 99.9% of germs", "health"),
    ("money-back promise", "guarantee"),
    ("risk free", "guarantee"),
    ("100% waterproof", "guarantee"),
    ("never fails", "guarantee"),
    ("lasts forever", "guarantee"),
    ("bestseller", "superlative"),
    ("#1 choice", "superlative"),
    ("number one glue", "superlative"),
    ("world's finest", "superlative"),
    ("perfect for you", "superlative"),
    ("unbeatable", "superlative"),
    ("the most powerful", "superlative"),
    ("of all time", "superlative"),
    ("lowest price", "superlative"),
    ("for seniors", "protected_attribute"),
    ("stay young", "protected_attribute"),
    ("too old for this", "protected_attribute"),
    ("at your age", "protected_attribute"),
    ("for women", "protected_attribute"),
    ("for men", "protected_attribute"),
    ("women's size", "protected_attribute"),
    ("ladies only", "protected_attribute"),
    ("moms love it", "protected_attribute"),
    ("if you are pregnant", "protected_attribute"),
    ("if you have diabetes", "protected_attribute"),
    ("as an American", "protected_attribute"),
    ("for Christians", "protected_attribute"),
    ("for gay couples", "protected_attribute"),
    ("wheelchair users", "protected_attribute"),
]


@pytest.mark.parametrize(("text", "kind"), ADVERSARIAL)
def test_claims_are_found_through_evasions(text: str, kind: str) -> None:
    assert kind in {v.kind for v in claim_violations(text)}, claim_violations(text)


@pytest.mark.parametrize(
    "text",
    [
        "Heat-treated steel bolts",
        "treated steel",
        "healthy shine",
        "Occupational Health & Safety Products",
        "stage, message, manage, aged, measurement, menu, mentor, gold, bold",
        "Female NPT thread, male connector",
        "black gloves, white tape",
        "German engineering",
        "2 part epoxy, cures in 24 hours",
        "Self-healing cutting mat",
        "prevents rust and relieves strain",
        "#1 Phillips bit, size #1",
        "Gallium 99.99% pure",
        "for ages 8 and up",
        "removes old paint",
        "superior grip, better hold",
        "M3 x 10mm socket screws, B357 part, 10yd roll",
        "Gorilla Original Gorilla Glue\nFrom Gorilla, in Urethane Adhesives. Picked for your interest in Tapes.",
    ],
)
def test_clean_copy_has_no_claims(text: str) -> None:
    assert claim_violations(text) == []


# ------------------------------------------------------------------------------------------------ grounding


def test_grounding_flags_invented_facts(handmade, synthetic) -> None:
    records, facts = handmade
    glue = records["G1"]
    assert unsupported_facts("Gorilla Original Gorilla Glue, 8 oz bottle", glue, facts) == []
    assert unsupported_facts("Brown gorilla glue, 8-ounce; clamp 1 hour", glue, facts) == []
    assert unsupported_facts("Dynarex-grade glue", glue, facts) == [Fact("brand", "dynarex")]  # other item's brand
    assert unsupported_facts("Gorilla glue in a 500 ml bottle", glue, facts) == [Fact("number", "500")]
    assert unsupported_facts("20% stronger glue", glue, facts) == [Fact("number", "20")]
    assert unsupported_facts("Glue and gloves", glue, facts) == [Fact("product_type", "gloves")]
    assert unsupported_facts("Sanding rolls", glue, facts) == [Fact("product_type", "rolls")]

    roll = records["P1"]  # hyphens, plurals, mixed numbers and units written differently
    assert unsupported_facts("Porter Cable sanding rolls, 4.5 inch x 10 yd, 80 grit", roll, facts) == []
    assert unsupported_facts("4½-inch roll, 1,299.00", roll, facts) == []
    assert unsupported_facts("5-inch roll from PORTER-CABLE", roll, facts) == [Fact("number", "5")]

    serums, synthetic_facts = synthetic
    serum = serums["SKU-00002"]  # "Kinfolk Labs Balancing Eye Serum 30 ml", 28.99
    assert unsupported_facts("Eye serum, 30ml, $28.99 from Kinfolk Labs", serum, synthetic_facts) == []
    found = unsupported_facts("Lumina eye serum, 500 ml, with a toner", serum, synthetic_facts)
    assert found == [Fact("number", "500"), Fact("brand", "lumina"), Fact("product_type", "toner")]


def test_check_copy_reasons(handmade) -> None:
    records, facts = handmade
    glue = records["G1"]
    good = check_copy(Copy("Gorilla Original Gorilla Glue", "Waterproof polyurethane glue from Gorilla."), glue, facts)
    assert good.ok and good.reasons() == []
    bad = check_copy(Copy("The best glue, 50 ml", "x" * 161), glue, facts)
    assert not bad.ok and bad.too_long
    assert bad.reasons() == [
        "unsupported number '50'",
        "claim (superlative): 'best'",
        "body longer than 160 characters (161)",
    ]
    assert check_copy(Copy("G" * 61, "ok"), glue, facts).reasons() == ["headline longer than 60 characters (61)"]
    assert check_copy(Copy("Gorilla Glue", " "), glue, facts).reasons() == ["empty headline or body"]


# ------------------------------------------------------------------------------------------------ template


def _assert_template_passes(records: dict[str, ItemRecord], facts: CatalogueFacts) -> None:
    failures = []
    for record in records.values():
        interest = record.categories[-2] if len(record.categories) >= 3 else record.brand
        copy = template_copy(record, interest)
        result = check_copy(copy, record, facts)
        if not result.ok:
            failures.append((record.item_id, copy, result.reasons()))
    assert not failures, failures[:5]


def test_template_passes_for_every_synthetic_item(synthetic) -> None:
    records, facts = synthetic
    _assert_template_passes(records, facts)
    record = records["SKU-00002"]
    copy = template_copy(record, "Serums")
    assert copy == template_copy(record, "Serums")  # deterministic
    assert copy.headline == record.name and "Serums" in copy.body and "28.99" in copy.body
    assert "Lumina" not in template_copy(record, "Lumina").body  # an interest foreign to the record is ignored


def test_template_shortens_and_avoids_claims(handmade) -> None:
    records, facts = handmade
    glue = template_copy(records["G1"], "Adhesives & Sealants")
    assert glue.headline == "Gorilla Original Gorilla Glue, Waterproof Polyurethane Glue"
    assert "Adhesives & Sealants" in glue.body and "Gorilla" in glue.body
    claimy = template_copy(records["B1"], "Duct Tape")  # "Best Choice 100% Waterproof Duct Tape for Men, ..."
    assert check_copy(claimy, records["B1"], facts).ok
    assert "Best" not in claimy.headline and "Men" not in claimy.headline and "Best" not in claimy.body
    for limit in (12, 20, 30):
        short = template_copy(records["P1"], max_headline=limit)
        assert len(short.headline) <= limit and check_copy(short, records["P1"], facts, max_headline=limit).ok
        words = records["P1"].name.replace("-", " ").split()
        assert all(w in words for w in short.headline.replace("-", " ").split())  # cut between words only
    _assert_template_passes(records, facts)


def test_template_fallback_always_passes_claims(synthetic) -> None:
    _, facts = synthetic
    best = ItemRecord("X1", "Best Glue", None, (), None, None)
    assert template_copy(best).headline == "Glue" and check_copy(template_copy(best), best, facts).ok
    hopeless = ItemRecord("X2", "Best Perfect #1", "Miracle Labs", ("Cures & Remedies",), 9.5, "Cures all.")
    copy = template_copy(hopeless, "Miracle Labs")
    assert check_copy(copy, hopeless, facts).ok and copy.body == "Price: 9.50."
    wheel = ItemRecord("X3", "Norton Bench Wheel (Pack of 10 wheels, grit 100)", "Norton", ("Wheels",), None, None)
    assert template_copy(wheel, max_headline=30).headline == "Norton Bench Wheel"  # no unclosed "("
    junk = ItemRecord("X4", "Industrial & Scientific />", "SEOH", ("Industrial & Scientific", "Lab Tubes"), None, None)
    assert template_copy(junk).headline in {"Lab Tubes from SEOH", "Lab Tubes", "SEOH"}


@pytest.mark.skipif(not SCIENTIFIC.exists(), reason="Amazon Scientific data not present")
def test_template_passes_for_every_scientific_item() -> None:
    from recsys.data.importers import read_recbole

    records = records_from_catalogue(read_recbole(SCIENTIFIC).catalogue)
    assert len(records) == 4385
    assert records["B0000223UV"].name == (
        "Gorilla Original Gorilla Glue, Waterproof Polyurethane Glue, 8 ounce Bottle, Brown"
    )
    facts = CatalogueFacts.from_records(records.values())
    assert 200 <= len(facts.product_nouns) <= 3000 and {"glue", "glove", "pipette", "roll"} <= facts.product_nouns
    _assert_template_passes(records, facts)


# ------------------------------------------------------------------------------------------------ interests


def test_shared_interest_and_history_interests(synthetic) -> None:
    records, facts = synthetic
    items = list(records.values())
    item = records["SKU-00001"]  # Petal & Pine toner: Beauty > Skin Care > Toners
    toners = [r for r in items if r.leaf == "Toners" and r.brand != item.brand][:2]
    same_brand = [r for r in items if r.brand == item.brand and r.leaf != "Toners"][:1]
    assert shared_interest(item, toners + same_brand, facts) == "Toners"  # shared twice beats once
    assert shared_interest(item, same_brand, facts) == "Petal & Pine"
    assert shared_interest(item, [], facts) is None
    other = [r for r in items if r.brand != item.brand and r.categories[1] != "Skin Care"][:3]
    assert shared_interest(item, other, facts) is None  # "Beauty" is shared by all: not an interest
    interests = history_interests(toners + same_brand, facts)
    assert "toners" in interests and item.brand.casefold() in interests and "beauty" not in interests
    assert names_interest("Chosen for your interest in toner.", interests)
    assert names_interest("A PETAL & PINE pick", interests)
    assert not names_interest("A gentle serum", interests)
    assert names_interest("adhesives and sealants", {"adhesives & sealants"})


def test_adcopy_never_imports_torch() -> None:
    code = "import sys, recsys.adcopy; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
