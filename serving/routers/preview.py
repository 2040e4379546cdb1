"""GET /preview: a page for people looking at the model. Pick a known user (or type a user ID, or a history of
item IDs) and see the history's titles, the top recommendations with their scores, each one's ad copy with its
source and checks, and the items most similar to it.

It only exists when RECSYS_PREVIEW is on (serving/app.py leaves the route out otherwise). Server-rendered on a
plain GET form, no script; every text that comes from a request or a bundle goes through `html.escape`, which
escapes the same characters as the behaviour report's autoescaped template (& < > " ').
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from html import escape
from urllib.parse import urlencode

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from recsys.bundle.adcopy import AdCopyAnswer
from recsys.bundle.reader import BundleRecommender, Query
from serving.dependencies import Engine, Services, ServicesDep
from serving.errors import ApiError
from serving.routers.adcopy import write_copy
from serving.schemas import MAX_HISTORY_ITEMS, MAX_ID_LENGTH

router = APIRouter(include_in_schema=False)  # a page for people, not part of the JSON API

DEFAULT_K = 5
MAX_PREVIEW_K = 20  # each recommendation may cost one live ad-copy generation (up to the copy time budget)
KNOWN_USERS_LISTED = 50
HISTORY_SHOWN = 30  # the most recent items of the history; the page says how many there are in all
SIMILAR_FOR = 5  # the first recommendations get similar items (each one is a pass over every item vector)
SIMILAR_SHOWN = 4
SOURCE_LABELS = {"precomputed": "precomputed", "generated": "generated", "fallback": "template"}


class BadInput(ValueError):
    """Something in the form the page cannot answer; its message says what and what to do."""


@dataclass
class Form:
    """The form's fields as they were sent (shown back in the form, so a mistake can be corrected)."""

    user_id: str = ""
    history: str = ""
    k: str = str(DEFAULT_K)

    @property
    def empty(self) -> bool:
        return not self.user_id.strip() and not self.history.strip()

    def parse(self) -> tuple[str | None, list[str], int]:
        """(user ID or None, history item IDs, k); BadInput saying what is wrong."""
        user_id = self.user_id.strip() or None
        if user_id is not None and len(user_id) > MAX_ID_LENGTH:
            raise BadInput(f"the user ID is {len(user_id)} characters long; IDs have at most {MAX_ID_LENGTH}")
        history = [item.strip() for item in self.history.split(",") if item.strip()]
        if len(history) > MAX_HISTORY_ITEMS:
            raise BadInput(f"the history has {len(history)} items; send at most {MAX_HISTORY_ITEMS}")
        too_long = next((item for item in history if len(item) > MAX_ID_LENGTH), None)
        if too_long is not None:
            raise BadInput(f"history item {too_long[:40]!r}… is longer than {MAX_ID_LENGTH} characters")
        try:
            k = int(self.k) if self.k.strip() else DEFAULT_K
        except ValueError:
            raise BadInput(f"k must be a whole number from 1 to {MAX_PREVIEW_K}, got {self.k[:40]!r}") from None
        if not 1 <= k <= MAX_PREVIEW_K:
            raise BadInput(f"k must be a whole number from 1 to {MAX_PREVIEW_K}, got {k}")
        return user_id, history, k


@dataclass
class Recommended:
    item_id: str
    score: float
    copy: AdCopyAnswer | None = None
    copy_problem: str | None = None  # why there is no copy (no catalogue record, no ad-copy assets)
    similar: list[tuple[str, float]] = field(default_factory=list)


@dataclass
class PreviewPage:
    """Everything the page shows; `render_page` turns it into HTML."""

    bundle_version: str
    form: Form
    known_users: list[str]
    problem: str | None = None  # the input could not be answered: shown instead of results
    notes: list[str] = field(default_factory=list)  # what to know about these results (fallback, ignored items)
    history: list[str] = field(default_factory=list)  # the whole history the model was given, oldest first
    recommendations: list[Recommended] = field(default_factory=list)
    popularity_scores: bool = False  # the fallback's scores are popularity counts, not model scores
    titles: dict[str, str] = field(default_factory=dict)
    answered: bool = False


@router.get("/preview", response_class=HTMLResponse)
async def preview(
    engine: Engine, services: ServicesDep, user_id: str = "", history: str = "", k: str = str(DEFAULT_K)
) -> HTMLResponse:
    """The page: the picker alone, or the picker and the results for the user or history it was sent."""
    form = Form(user_id, history, k)
    page = PreviewPage(engine.version, form, known_users(engine))
    if form.empty:
        return HTMLResponse(render_page(page))
    try:
        user, items, n = form.parse()
    except BadInput as exc:
        page.problem = str(exc)
        return HTMLResponse(render_page(page), status_code=400)
    await fill(page, engine, services, user, items, n)
    return HTMLResponse(render_page(page))


def known_users(engine: BundleRecommender) -> list[str]:
    """Some users of the bundle, sorted. The first ones in storage order (by hash of the ID, so a fixed sample
    of the bundle): sorting every ID would read all of them, millions in a large bundle, on each page view."""
    return sorted(itertools.islice(engine.histories, KNOWN_USERS_LISTED))


async def fill(
    page: PreviewPage, engine: BundleRecommender, services: Services, user_id: str | None, history: list[str], k: int
) -> None:
    """Recommendations, copy and similar items, computed the way the JSON API computes them."""
    if user_id is None:
        query = Query(history)
    else:
        live = await services.store.live_items(user_id, engine)
        query = engine.user_query(user_id, live or [], history)
        if live is None:
            page.notes.append("the event store could not be read: the history is the bundle's alone")
    [result] = await services.compute(engine.recommend_queries, [query], k, True)
    page.answered = True
    page.history = list(query.history)
    page.popularity_scores = result.fallback
    page.notes.extend(_notes(engine, user_id, result.fallback_reason, result.unknown_items, len(page.history)))
    page.recommendations = [Recommended(i, s) for i, s in zip(result.item_ids, result.scores, strict=True)]
    if engine.adcopy is None:
        page.notes.append(f"bundle {engine.version} has no ad-copy assets (it was built without a catalogue)")
    for rank, item in enumerate(page.recommendations):
        if engine.adcopy is not None:
            try:
                item.copy, _ = await write_copy(engine, services, item.item_id, user_id, history)
            except ApiError as exc:  # e.g. an item without a catalogue record: no copy for it, the rest go on
                item.copy_problem = exc.message
        if rank < SIMILAR_FOR:
            similar = await services.compute(engine.similar_to, item.item_id, SIMILAR_SHOWN)
            item.similar = list(zip(similar.item_ids, similar.scores, strict=True))
    shown = [
        *page.history[-HISTORY_SHOWN:],
        *(r.item_id for r in page.recommendations),
        *(i for r in page.recommendations for i, _ in r.similar),
    ]
    page.titles = engine.titles(list(dict.fromkeys(shown)))


def _notes(
    engine: BundleRecommender, user_id: str | None, fallback: str | None, unknown: list[str], history_length: int
) -> list[str]:
    notes = []
    if fallback == "unknown_user":
        notes.append(
            f"user {user_id!r} is not in bundle {engine.version} and has sent no events since it was built: "
            "these are the most popular items"
        )
    elif fallback == "no_known_items":
        notes.append(f"no item of this history is in bundle {engine.version}: these are the most popular items")
    if unknown:
        more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
        listed = ", ".join(repr(i) for i in unknown[:10]) + more
        notes.append(f"not in this bundle, so ignored: {listed}")
    if history_length > engine.max_len:
        notes.append(f"the model reads the last {engine.max_len} of the {history_length} history items")
    return notes


# -- HTML ------------------------------------------------------------------------------------------------------
STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 1.5rem auto; max-width: 60rem; padding: 0 1rem; color: #222; }
h1 { font-size: 1.4rem; margin-bottom: .2rem; } h2 { font-size: 1.15rem; margin-top: 1.8rem; }
h3 { font-size: 1rem; margin: 0 0 .4rem; } h4 { font-size: .9rem; margin: .6rem 0 .2rem; color: #555; }
code { font-size: .85em; background: #f2f2f2; padding: 0 .25em; border-radius: 3px; }
.meta, .muted { color: #666; font-size: .9rem; }
form { display: flex; flex-wrap: wrap; gap: .6rem 1rem; align-items: end; padding: .8rem; background: #f6f7f9;
  border-radius: 6px; }
label { display: flex; flex-direction: column; font-size: .85rem; color: #444; }
input { font: inherit; padding: .25rem .4rem; } input[name=history] { width: 22rem; } input[name=k] { width: 4rem; }
button { font: inherit; padding: .3rem 1rem; }
.problem { background: #fdecea; border-left: 4px solid #c62828; padding: .5rem .8rem; }
.notes li { background: #fff8e1; padding: .2rem .5rem; margin: .2rem 0; list-style: none; }
.notes { padding: 0; }
.rec { border: 1px solid #ddd; border-radius: 6px; padding: .7rem .9rem; margin: .7rem 0; }
.score { color: #555; font-variant-numeric: tabular-nums; }
.copy { background: #fafafa; border-left: 3px solid #1565c0; padding: .4rem .7rem; }
.headline { font-weight: 600; margin: 0; } .body { margin: .2rem 0 .4rem; }
.badge { display: inline-block; font-size: .78rem; padding: 0 .45em; border-radius: 9px; margin-right: .3em;
  background: #e3f2fd; } .pass { background: #e8f5e9; } .fail { background: #ffebee; }
.reasons { margin: .2rem 0 0; font-size: .85rem; color: #555; }
"""


def render_page(page: PreviewPage) -> str:
    """The whole page as HTML; every text from the request or the bundle is escaped."""
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Preview · bundle {escape(page.bundle_version)}</title>",
        f"<style>{STYLE}</style></head><body>",
        "<h1>Recommendations preview</h1>",
        f'<p class="meta">bundle <code>{escape(page.bundle_version)}</code></p>',
        _form(page),
    ]
    if page.problem:
        parts.append(f'<p class="problem" role="alert">{escape(page.problem)}</p>')
    if page.notes:
        parts.append('<ul class="notes">' + "".join(f"<li>{escape(n)}</li>" for n in page.notes) + "</ul>")
    if page.answered:
        parts.append(_history(page))
        parts.append(_recommendations(page))
    parts.append("</body></html>")
    return "\n".join(parts)


def _form(page: PreviewPage) -> str:
    options = "".join(f'<option value="{escape(u)}"></option>' for u in page.known_users)
    form = page.form
    return (
        '<form method="get" action="/preview" id="picker">'
        '<label>User <input name="user_id" list="known-users" autocomplete="off" '
        f'placeholder="pick or type a user ID" value="{escape(form.user_id)}"></label>'
        f'<datalist id="known-users">{options}</datalist>'
        '<label>and/or history <input name="history" placeholder="item IDs, comma-separated, oldest first" '
        f'value="{escape(form.history)}"></label>'
        f'<label>k <input name="k" type="number" min="1" max="{MAX_PREVIEW_K}" value="{escape(form.k)}"></label>'
        '<button type="submit">Show</button></form>' + _user_links(page.known_users)
    )


def _user_links(users: list[str]) -> str:
    """The known users as links too: one click shows a user, without typing (and without a script)."""
    if not users:
        return ""
    links = ", ".join(f'<a href="/preview?{escape(urlencode({"user_id": u}))}">{escape(u)}</a>' for u in users)
    return f'<details class="muted"><summary>{len(users)} users of this bundle</summary><p>{links}</p></details>'


def _title(page: PreviewPage, item_id: str) -> str:
    title = page.titles.get(item_id)
    shown = escape(title) if title else '<span class="muted">(no title)</span>'
    return f"{shown} <code>{escape(item_id)}</code>"


def _score(page: PreviewPage, score: float) -> str:
    return f"{score:.0f} events" if page.popularity_scores else f"{score:.4f}"


def _history(page: PreviewPage) -> str:
    total = len(page.history)
    if not total:
        return '<section id="history"><h2>History</h2><p class="muted">empty</p></section>'
    shown = page.history[-HISTORY_SHOWN:]
    which = f"the last {len(shown)} of {total}" if total > len(shown) else f"{total}"
    start = total - len(shown) + 1
    items = "".join(f"<li>{_title(page, i)}</li>" for i in shown)
    return (
        f'<section id="history"><h2>History <span class="muted">({which} items, oldest first)</span></h2>'
        f'<ol start="{start}">{items}</ol></section>'
    )


def _recommendations(page: PreviewPage) -> str:
    kind = "popularity counts" if page.popularity_scores else "model scores"
    articles = "".join(_recommended(page, rank, r) for rank, r in enumerate(page.recommendations, start=1))
    return (
        f'<section id="recommendations"><h2>Top {len(page.recommendations)} recommendations '
        f'<span class="muted">({kind})</span></h2>{articles}</section>'
    )


def _recommended(page: PreviewPage, rank: int, item: Recommended) -> str:
    parts = [
        f'<article class="rec" id="rec-{rank}"><h3>{rank}. {_title(page, item.item_id)} '
        f'<span class="score">score {_score(page, item.score)}</span></h3>'
    ]
    if item.copy is not None:
        parts.append(_copy(item.copy))
    elif item.copy_problem:
        parts.append(f'<p class="muted">no ad copy: {escape(item.copy_problem)}</p>')
    if item.similar:
        similar = "".join(
            f'<li>{_title(page, i)} <span class="score">cosine {s:.3f}</span></li>' for i, s in item.similar
        )
        parts.append(f'<div class="similar"><h4>Similar items</h4><ol>{similar}</ol></div>')
    parts.append("</article>")
    return "".join(parts)


def _copy(answer: AdCopyAnswer) -> str:
    source = SOURCE_LABELS.get(answer.source, answer.source)
    checks = {"grounded": answer.grounded, "claims-free": answer.claims_free, "within length": answer.within_length}
    badges = "".join(
        f'<span class="badge check {"pass" if ok else "fail"}">{"✓" if ok else "✗"} {name}</span>'
        for name, ok in checks.items()
    )
    interest = f' <span class="muted">interest: {escape(answer.interest)}</span>' if answer.interest else ""
    reasons = "".join(f"<li>{escape(r)}</li>" for r in answer.reasons)
    return (
        '<div class="copy">'
        f'<p class="headline">{escape(answer.copy.headline)}</p><p class="body">{escape(answer.copy.body)}</p>'
        f'<span class="badge source source-{escape(source)}">{escape(source)}</span>{badges}{interest}'
        + (f'<ul class="reasons">{reasons}</ul>' if reasons else "")
        + "</div>"
    )
