"""How copy reads: repeated n-grams, catalogue boilerplate and concrete facts, on handmade records and on the
fallback template of the project's own synthetic catalogue."""

from __future__ import annotations

import json

import pytest

from recsys.adcopy import CatalogueFacts, Copy, ItemRecord, records_from_catalogue, template_copy
from recsys.adcopy.quality import boilerplate, concrete_facts, copy_quality, repeated_ngram_rate
from recsys.data.synthetic import generate, load_preset

BEAKER = ItemRecord(
    item_id="B00X4WHP5E",
    name="Kimble Glass Beaker XR2000",
    brand="Kimble",
    categories=("Industrial & Scientific", "Lab Supplies", "Beakers"),
    price=12.5,
    description="Made of borosilicate glass, 250 ml capacity, graduated for boiling and heating solutions.",
)


def test_repeated_ngrams_are_the_share_of_word_ngrams_seen_before_in_the_same_copy() -> None:
    assert repeated_ngram_rate("a sturdy beaker for the lab") == 0.0
    assert repeated_ngram_rate("great beaker great beaker great beaker", n=2) == pytest.approx(3 / 5)
    assert repeated_ngram_rate("A b c, a B c!", n=3) == pytest.approx(1 / 4)  # case and punctuation ignored
    assert repeated_ngram_rate("too short", n=3) == 0.0


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("Kimble beaker. Category: Lab Supplies.", "field label"),
        ("Kimble beaker for Lab Supplies > Beakers.", "category path separator"),
        ("Kimble beaker from lab supplies beakers, 250 ml.", "category path 'Lab Supplies Beakers'"),
        ("Kimble beaker, code K7731PQ, 250 ml.", "product code 'K7731PQ'"),
        ("Kimble beaker B00X4WHP5E in borosilicate glass.", "product code 'B00X4WHP5E'"),
        ("SKU #44 beaker.", "field label"),
    ],
)
def test_catalogue_furniture_is_boilerplate(text: str, reason: str) -> None:
    assert any(reason in found for found in boilerplate(text, BEAKER)), boilerplate(text, BEAKER)


def test_plain_copy_with_the_names_own_model_code_and_a_capitalised_quantity_is_not_boilerplate() -> None:
    text = "Kimble Glass Beaker XR2000. Borosilicate glass, 250ML, graduated for heating solutions."
    assert boilerplate(text, BEAKER) == []


def test_concrete_facts_are_numbers_and_description_words_beyond_name_brand_and_category() -> None:
    facts = concrete_facts("Kimble Glass Beaker XR2000: borosilicate, 250 ml, for heating in the lab.", BEAKER)
    assert "250" in facts and "borosilicate" in facts and "heating" in facts
    # the name's words and number, the brand and the category words are not facts beyond the name
    assert not {"glass", "beaker", "kimble", "2000", "xr2000", "lab"} & set(facts)
    assert concrete_facts("Kimble Glass Beaker XR2000. A beaker for your lab.", BEAKER) == []


def test_a_copy_is_informative_with_a_number_or_two_description_words_and_no_boilerplate() -> None:
    def informative(body: str) -> bool:
        return copy_quality(Copy("Kimble Glass Beaker", body), BEAKER).informative

    assert informative("Holds 250 ml.")
    assert informative("Borosilicate, graduated.")
    assert not informative("Borosilicate.")  # one word is not enough
    assert not informative("A beaker for your lab.")
    assert not informative("Holds 250 ml. Category: Beakers.")  # a fact, but with boilerplate


def test_the_fallback_template_is_flagged_as_boilerplate_on_the_synthetic_catalogue() -> None:
    _, catalogue = generate(load_preset("tiny"), seed=0)
    records = records_from_catalogue(catalogue)
    some = list(records.values())[:20]
    copies = [(template_copy(record, interest), record) for record in some for interest in (None, record.brand)]
    scored = [copy_quality(copy, record) for copy, record in copies]
    # the template writes catalogue fields ("Price: 12.99."): safe, but not copy a marketer would ship
    assert all(any("field label" in b for b in q.boilerplate) for q in scored)
    assert not any(q.informative for q in scored)


def test_every_system_is_scored_on_the_same_measures_and_the_template_is_all_boilerplate(tmp_path) -> None:
    from training.adcopy.evaluation import score_system, write_side_by_side

    _, catalogue = generate(load_preset("tiny"), seed=0)
    records = list(records_from_catalogue(catalogue).values())[:30]
    facts = CatalogueFacts.from_records(records)
    references = [record.description or record.name for record in records]
    template = [template_copy(record, None) for record in records]
    invented = [Copy(record.name, "Now 99 percent off, 7 sizes.") for record in records]
    scores = score_system(template, records, references, facts)
    assert scores["items"] == 30 and scores["boilerplate_rate"] == 1.0 and scores["informative_rate"] == 0.0
    assert scores["unsupported_after_checks"] == 0.0  # the template only writes record fields
    assert score_system(invented, records, references, facts)["unsupported_after_checks"] == 1.0
    with pytest.raises(ValueError, match="one copy, record and reference per item"):
        score_system(template[:3], records, references, facts)

    path, key_path = tmp_path / "side.md", tmp_path / "side-key.json"
    run = {"date": "2026-12-04T00:00:00+00:00", "hardware": "test", "command": "pytest"}
    systems = {"template": template, "invented": invented}
    with pytest.raises(ValueError, match="needs the run's command"):
        write_side_by_side(path, key_path, records, systems, {**run, "command": ""})
    write_side_by_side(path, key_path, records, systems, run, seed=1)
    document = json.loads(key_path.read_text())
    assert {k: document[k] for k in run} == run  # dated and attributed like every result
    key = document["items"]
    page = path.read_text()
    assert set(key) == {record.item_id for record in records}
    assert {tuple(v.values()) for v in key.values()} == {("template", "invented"), ("invented", "template")}
    assert "template" not in page and "invented" not in page  # the page does not say which is which
    first = records[0]
    expected = template[0] if key[first.item_id]["A"] == "template" else invented[0]
    assert f"- **A**: **{expected.headline}** — {expected.body}" in page


def test_catalogue_labels_and_paths_are_not_sentences_a_copy_may_reuse() -> None:
    from recsys.adcopy.extractive import extractive_copy
    from recsys.adcopy.prompt import clean_sentences

    description = (
        "Clarifying Hair Oil by Marisol, 100 ml. Category: Beauty > Hair Care > Hair Masks. Price: 21.99. "
        "Comb it through damp hair and rinse after ten minutes."
    )
    assert clean_sentences(description) == [
        "Clarifying Hair Oil by Marisol, 100 ml.",
        "Comb it through damp hair and rinse after ten minutes.",
    ]
    path = ("Beauty", "Hair Care", "Hair Masks")
    record = ItemRecord("SKU-1", "Marisol Clarifying Hair Oil 100 ml", "Marisol", path, 21.99, description)
    copy = extractive_copy(record, "Marisol")
    assert boilerplate(f"{copy.headline}. {copy.body}", record) == []
    assert "rinse after ten minutes" in copy.body


def test_the_fallback_reads_past_an_opening_that_says_nothing_concrete_to_the_sentences_that_do() -> None:
    from recsys.adcopy.checks import check_copy
    from recsys.adcopy.extractive import extractive_copy, informative_extractive_copies

    fact = "It is rated for water lines and gas lines and oil lines in homes and shops and farms and boats. "
    description = (
        "Anderson Metals brass fittings, the Anderson Metals way. "  # the opening: brand and name again
        + "Everything we make at Anderson Metals is brass that we sell. " * 6  # pushes the facts past the opening
        + fact * 2  # pasted twice by the seller
        + "Each elbow turns the flow through ninety degrees in tight spaces under sinks, behind walls, in ducts. "
        + "Machined from lead-free C360 brass with a 3/8-inch NPT thread. "
        + "SKU: AM-38116. Ships in a box."  # a label line and a factless line: neither is reused
    )
    record = ItemRecord(
        "B0FIT", "Anderson Metals Brass Pipe Fitting", "Anderson Metals", ("Plumbing",), 7.0, description
    )
    facts = CatalogueFacts.from_records([record])
    assert not copy_quality(extractive_copy(record, None), record).informative  # the opening alone says nothing

    copies = informative_extractive_copies(record, None, facts)

    assert len(copies) == 1  # the opening is not offered
    copy = copies[0]
    assert copy.headline == record.name
    # the repeated sentence once; the elbow sentence, too long beside it, passed over (not cut) for a shorter one
    assert copy.body == fact + "Machined from lead-free C360 brass with a 3/8-inch NPT thread."
    assert "SKU" not in copy.body and "Ships in a box" not in copy.body and "Everything we make" not in copy.body
    assert copy_quality(copy, record).informative and check_copy(copy, record, facts).ok


def test_a_record_whose_description_states_nothing_beyond_its_name_gets_no_extractive_fallback() -> None:
    from recsys.adcopy.extractive import informative_extractive_copies

    record = ItemRecord(
        "B0NIL", "DEWALT Grinding Wheel", "DEWALT", ("Abrasives",), None, "DEWALT grinding wheel by DEWALT."
    )
    assert informative_extractive_copies(record, None, CatalogueFacts.from_records([record])) == []
