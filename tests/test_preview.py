"""GET /preview against a real uvicorn server: the picker, a user's history titles, recommendations with scores,
ad copy with its source and checks, similar items; escaping of a catalogue title holding a script; clear
messages for bad input; 404 when the setting is off; the page in headless Chromium.

The bundle is the tiny LM's, with template-only ad-copy assets (no copy model) and, written the way the nightly
stores it, precomputed copy for one user's top 3: so the page shows both precomputed and template copy.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from html import escape
from urllib.parse import urlencode, urljoin

import httpx
import polars as pl
import pytest

from recsys.adcopy.checks import Copy
from recsys.adcopy.records import records_from_catalogue
from recsys.adcopy.template import template_copy
from recsys.bundle.adcopy import AdCopyAnswer
from recsys.bundle.histories import user_key
from recsys.bundle.layout import ADCOPY_DIR, COPY_COPIES
from recsys.harness import ServerProcess
from recsys.settings import REPO_ROOT, Settings
from serving.routers.preview import (
    KNOWN_USERS_LISTED,
    MAX_PREVIEW_K,
    SIMILAR_FOR,
    SIMILAR_SHOWN,
    Form,
    PreviewPage,
    Recommended,
    render_page,
)
from training.reports.browser import find_chromium

SCRIPT_TITLE = "Evil <script>alert(\"owned\")</script> & 'Co' Toner"
PRECOMPUTED_TOP = 3
CHECK_LABELS = {"grounded": "grounded", "claims_free": "claims-free", "within_length": "within length"}
SCREENSHOT = REPO_ROOT / "var" / "test-artifacts" / "preview.png"


@pytest.fixture(scope="module")
def preview_bundle(tmp_path_factory, tiny_prepared, tiny_lm):
    """(bundles root, the user with precomputed copy, the item whose title holds a script, the catalogue)."""
    from training import pipeline
    from training.adcopy.batch import COPY_COLUMNS
    from training.export import AdCopyPlan, export_bundle, top_k_items

    prepared, _ = tiny_prepared
    sequences = pipeline.build_sequences(prepared.events, prepared.vocab)
    # The user stored first (smallest ID hash) is among the users the picker lists.
    row = min(range(len(sequences.user_ids)), key=lambda r: user_key(str(sequences.user_ids[r])))
    user = str(sequences.user_ids[row])
    script_item = prepared.vocab.item_ids[int(sequences.items[row][-1])]  # the user's latest item
    catalogue = prepared.catalogue.with_columns(
        pl.when(pl.col("item_id") == script_item).then(pl.lit(SCRIPT_TITLE)).otherwise(pl.col("title")).alias("title")
    )
    records = records_from_catalogue(catalogue)

    def write_precomputed(staging):
        one_user = type(sequences)([user], [sequences.items[row]])
        top = top_k_items(tiny_lm, one_user, PRECOMPUTED_TOP, 8)[user]
        rows = []
        for item_id in top:
            copy = template_copy(records[item_id])
            reasons = ["the template (test bundle)"]
            rows.append(
                {"user_id": user, "item_id": item_id, "headline": copy.headline, "body": copy.body}
                | {"source": "fallback", "interest": None, "reasons": reasons}
            )
        pl.DataFrame(rows, schema=COPY_COLUMNS).write_parquet(staging / ADCOPY_DIR / COPY_COPIES)

    root = tmp_path_factory.mktemp("preview-bundles")
    export_bundle(
        tiny_lm,
        sequences,
        root,
        catalogue,
        {"metrics": {}},
        promote=True,
        adcopy=AdCopyPlan(None, top_k=PRECOMPUTED_TOP),
        before_seal=write_precomputed,
    )
    return root, user, script_item, catalogue


def _start(root, work, preview: bool) -> ServerProcess:
    return ServerProcess(root, work, env={"RECSYS_PREVIEW": "1" if preview else "0"}).start()


def _stop(process: ServerProcess) -> None:
    assert process.stop() == 0, process.log()[-3000:]
    assert process.torch_imported() is False, "the service imported torch"
    assert "Traceback" not in process.log(), process.log()[-3000:]


@pytest.fixture(scope="module")
def server(preview_bundle, tmp_path_factory):
    process = _start(preview_bundle[0], tmp_path_factory.mktemp("preview-on"), preview=True)
    yield process
    _stop(process)


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def titles(preview_bundle):
    catalogue = preview_bundle[3]
    return dict(zip(catalogue["item_id"].to_list(), catalogue["title"].to_list(), strict=True))


def articles(page: str) -> list[tuple[str, str]]:
    """(item ID, the article's HTML) of each recommendation on the page, in rank order."""
    found = re.findall(r'<article class="rec" id="rec-\d+"><h3>.*?<code>(.*?)</code>(.*?)</article>', page, re.S)
    return [(item_id, html) for item_id, html in found]


def section(page: str, name: str) -> str:
    match = re.search(rf'<section id="{name}">(.*?)</section>', page, re.S)
    assert match, f"no {name} section"
    return match.group(1)


# -- the page on a real server -----------------------------------------------------------------------------
def test_the_picker_lists_known_users(client, preview_bundle):
    response = client.get("/preview")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    page = response.text
    assert '<form method="get" action="/preview"' in page and 'name="user_id"' in page and 'name="history"' in page
    listed = re.findall(r'<option value="([^"]*)"></option>', page)
    assert len(listed) == KNOWN_USERS_LISTED and listed == sorted(listed)
    assert preview_bundle[1] in listed
    assert 'id="recommendations"' not in page  # nothing asked yet, nothing answered


def test_a_known_user_shows_history_recommendations_copy_and_similar_items(client, preview_bundle, titles):
    _, user, script_item, _ = preview_bundle
    response = client.get("/preview", params={"user_id": user, "k": 5})
    assert response.status_code == 200
    page = response.text
    # the history, by title (escaped), as the bundle stores it
    api = client.get(f"/v1/users/{user}/recommendations", params={"k": 5}).json()
    history = section(page, "history")
    assert escape(titles[script_item]) in history and "<script" not in page
    # the recommendations the API gives, in order, with their scores
    shown = articles(page)
    assert [i for i, _ in shown] == [i["item_id"] for i in api["items"]]
    sources = []
    for rank, ((item_id, html), scored) in enumerate(zip(shown, api["items"], strict=True)):
        assert escape(titles[item_id]) in html and f"score {scored['score']:.4f}" in html
        # the same copy POST /v1/ad-copy answers, with its source and its checks
        copy = client.post("/v1/ad-copy", json={"user_id": user, "item_id": item_id}).json()
        assert escape(copy["headline"]) in html and escape(copy["body"]) in html
        source = {"fallback": "template"}.get(copy["source"], copy["source"])
        assert f'class="badge source source-{source}">{source}</span>' in html
        sources.append(source)
        for check, label in (
            ("grounded", "grounded"),
            ("claims_free", "claims-free"),
            ("within_length", "within length"),
        ):
            assert f"{'✓' if copy['checks'][check] else '✗'} {label}</span>" in html
        # the items GET /v1/items/{id}/similar gives, for the first few
        if rank < SIMILAR_FOR:
            similar = client.get(f"/v1/items/{item_id}/similar", params={"k": SIMILAR_SHOWN}).json()["items"]
            block = html.split("Similar items", 1)[1]
            assert [m for m in re.findall(r"<code>(.*?)</code>", block)] == [s["item_id"] for s in similar]
            assert all(f"cosine {s['score']:.3f}" in block for s in similar)
    assert "precomputed" in sources and "template" in sources  # the batch's copy for the top, live for the rest


def test_a_typed_history_with_unknown_items_says_what_it_ignored(client, preview_bundle, titles):
    items = list(titles)[:3]
    response = client.get("/preview", params={"history": ", ".join([items[0], "NO-SUCH-ITEM", items[1]]), "k": 3})
    assert response.status_code == 200
    page = response.text
    assert "not in this bundle, so ignored: &#x27;NO-SUCH-ITEM&#x27;" in page
    assert [escape(titles[i]) in section(page, "history") for i in items[:2]] == [True, True]
    assert len(articles(page)) == 3 and "(model scores)" in page


def test_unknown_users_and_unknown_histories_get_popular_items_with_a_note(client):
    page = client.get("/preview", params={"user_id": "nobody-at-all", "k": 4}).text
    assert "user &#x27;nobody-at-all&#x27; is not in bundle" in page and "most popular items" in page
    assert len(articles(page)) == 4 and "(popularity counts)" in page
    page = client.get("/preview", params={"history": "X1,X2"}).text
    assert "no item of this history is in bundle" in page and "&#x27;X1&#x27;, &#x27;X2&#x27;" in page


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"user_id": "u", "k": "abc"}, f"k must be a whole number from 1 to {MAX_PREVIEW_K}, got &#x27;abc&#x27;"),
        ({"user_id": "u", "k": "0"}, f"k must be a whole number from 1 to {MAX_PREVIEW_K}, got 0"),
        ({"user_id": "u", "k": str(MAX_PREVIEW_K + 1)}, f"got {MAX_PREVIEW_K + 1}"),
        ({"user_id": "x" * 300}, "the user ID is 300 characters long"),
        ({"history": ",".join(["a"] * 1001)}, "the history has 1001 items"),
    ],
)
def test_bad_input_shows_a_message_in_the_page(client, params, message):
    response = client.get("/preview", params=params)
    assert response.status_code == 400 and response.headers["content-type"].startswith("text/html")
    assert message in response.text and 'role="alert"' in response.text
    assert '<form method="get" action="/preview"' in response.text  # the form stays, to correct the input
    assert 'id="recommendations"' not in response.text


def test_off_by_default_the_route_is_absent(preview_bundle, tmp_path):
    assert Settings.model_fields["preview"].default is False
    process = _start(preview_bundle[0], tmp_path, preview=False)
    try:
        with httpx.Client(base_url=process.url, timeout=10) as c:
            preview = c.get("/preview", params={"user_id": preview_bundle[1]})
            absent = c.get("/no-such-page")
            assert c.get("/readyz").status_code == 200
    finally:
        _stop(process)
    assert preview.status_code == 404 == absent.status_code
    assert preview.json()["error"]["message"] == absent.json()["error"]["message"]


# -- the render function alone -----------------------------------------------------------------------------
def test_render_escapes_every_text_and_shows_failed_checks():
    evil = '<img src=x onerror="alert(1)">'
    copy = Copy(f"Buy {evil}", f"Body & {evil}")
    answer = AdCopyAnswer("i1", copy, "generated", evil, [f"reason {evil}"], grounded=False, claims_free=True)
    page = PreviewPage(
        bundle_version=f"v{evil}",
        form=Form(user_id=f'"><b>{evil}', history=evil, k="5"),
        known_users=[evil, "u2"],
        notes=[f"note {evil}"],
        history=[evil],
        recommendations=[Recommended(evil, 0.5, copy=answer, similar=[("i2", 0.9)])],
        titles={evil: f"title {evil}", "i2": evil},
        answered=True,
    )
    html = render_page(page)
    assert "<img" not in html and "<b>" not in html and 'onerror="' not in html
    assert html.count(escape(evil)) >= 10  # every place it went in, escaped
    assert '<span class="badge check fail">✗ grounded</span>' in html
    assert '<span class="badge check pass">✓ claims-free</span>' in html
    assert 'class="badge source source-generated">generated</span>' in html


# -- the page in a browser ---------------------------------------------------------------------------------
def _dump_dom(chromium: str, url: str, screenshot=None) -> str:
    with tempfile.TemporaryDirectory(prefix="recsys-chromium-") as profile:
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", f"--user-data-dir={profile}"]
        flags += ["--disable-background-networking", "--disable-component-update", "--disable-sync"]
        if screenshot is not None:
            flags += [f"--screenshot={screenshot}", "--window-size=1280,2400", "--hide-scrollbars"]
        else:
            flags += ["--dump-dom"]
        done = subprocess.run([chromium, *flags, url], capture_output=True, text=True, timeout=90, check=True)
    return done.stdout


@pytest.mark.skipif(find_chromium() is None, reason="Chromium is not installed (make test installs it)")
def test_the_page_in_headless_chromium(server, preview_bundle, titles):
    chromium = find_chromium()
    assert chromium is not None
    _, user, script_item, _ = preview_bundle
    picker = _dump_dom(chromium, f"{server.url}/preview")
    # pick the user from the rendered picker and submit the form as the browser would: GET action?fields
    form = re.search(r'<form method="get" action="([^"]+)" id="picker">(.*?)</form>', picker, re.S)
    assert form is not None, picker[:2000]
    options = re.findall(r'<option value="([^"]*)">', picker)
    assert user in options
    fields = dict.fromkeys(re.findall(r'<input name="([^"]+)"', form.group(2)), "")
    assert set(fields) == {"user_id", "history", "k"}
    fields |= {"user_id": user, "k": "5"}
    submitted = urljoin(f"{server.url}/preview", form.group(1)) + "?" + urlencode(fields)
    dom = _dump_dom(chromium, submitted)
    # the title is text, not an element (a serialised DOM escapes &, < and > in text, not quotes)
    assert "<script" not in dom and escape(titles[script_item], quote=False) in dom
    recommended = articles(dom)
    assert len(recommended) == 5
    for item_id, html in recommended:
        assert escape(titles[item_id], quote=False) in html and re.search(r"score \d+\.\d{4}", html)
        assert re.search(r'<p class="headline">[^<]+</p><p class="body">[^<]+</p>', html)
        assert re.search(r"source-(precomputed|template)", html) and "✓ grounded" in html
    assert "Similar items" in dom
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    shot = SCREENSHOT.with_suffix(".tmp.png")
    _dump_dom(chromium, submitted, screenshot=shot)
    assert shot.stat().st_size > 20_000
    shutil.move(shot, SCREENSHOT)
