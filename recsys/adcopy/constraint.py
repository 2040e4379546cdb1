"""Span-constrained decoding: generated copy is a chain of whole-word spans of the item's own text.

Why: a small copy model free to pick any token writes sub-word mixtures ("Gorillaates 30 ozutes") that the
checks reject. Held to spans of the record, its brands, numbers and nouns are grounded by construction, while
the model still decides which spans, in what order, and where the headline and the body end.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from tokenizers import Tokenizer

# A span may end after these marks, or just before the ones that open or separate a clause. Not at a colon:
# "Net weight:" must keep its own value, never take one from elsewhere in the record.
_ENDS_AFTER = {",", ".", ";", "!", ")"}
_ENDS_BEFORE = {",", ".", ";", "!", "("}


@dataclass
class SpanState:
    """Per-row decoding state for a batch of candidates."""

    active: np.ndarray  # (rows, positions) bool: where in the sources each row's last token may stand
    fresh: np.ndarray  # (rows,) bool: nothing written yet in the current part (headline or body)
    in_body: np.ndarray  # (rows,) bool: the body marker has been written
    used: np.ndarray  # (rows, spots) bool: text positions already copied (no span is copied twice)


class SpanConstraint:
    """The tokens each row may write next: continue its span, or open a new one where a clause ended."""

    def __init__(
        self, tokenizer: Tokenizer, sources: Sequence[str], body_id: int, eos_id: int, openers: Sequence[str] = ()
    ) -> None:
        """`sources` may be copied from anywhere; `openers` (the interest hooks) only as a body's opening."""
        sources = list(dict.fromkeys(t.strip() for t in sources if t.strip()))
        if not sources:
            raise ValueError("a span constraint needs at least one non-empty source text")
        openers = [t.strip() for t in openers if t.strip()]
        # Each text is tokenized as an opening (no leading space) and mid-text (leading space): a byte-level BPE
        # writes a word differently in the two places. (text, mid-text variant, which text): both variants of
        # a text share their positions' "used" marks.
        variants = [(t, mid, k) for k, t in enumerate(sources) for mid in (False, True)]
        variants += [(t, False, len(sources) + k) for k, t in enumerate(openers)]
        texts = [(" " + t if mid else t) for t, mid, _ in variants]
        tokens, opens, starts, ends, following, spots = [], [], [], [], [], []
        encodings = tokenizer.encode_batch(texts, add_special_tokens=False)
        for (_, mid_text, k), encoding in zip(variants, encodings, strict=True):
            ids, pieces = encoding.ids, [tokenizer.decode([i]) for i in encoding.ids]
            for j, token in enumerate(ids):
                last = j == len(ids) - 1
                tokens.append(token)
                spots.append((k, encoding.offsets[j][1] - mid_text))  # the same text position in both variants
                opens.append(j == 0 and not mid_text)
                # a new span starts at a word after a space (never glued onto the previous word)
                starts.append(mid_text and pieces[j].startswith(" ") and pieces[j].strip()[:1].isalnum())
                # ... once the current one reached the end of a clause: its text's end, or a clause mark
                ends.append(last or pieces[j].strip() in _ENDS_AFTER or pieces[j + 1].strip()[:1] in _ENDS_BEFORE)
                following.append(-1 if last else ids[j + 1])
        self.tokens = np.asarray(tokens, dtype=np.int64)
        self.opens = np.asarray(opens, dtype=bool)  # a headline or body may begin here
        self.starts = np.asarray(starts, dtype=bool)  # a new span may begin here once a clause ended
        self.ends = np.asarray(ends, dtype=bool)  # a clause ends after this position
        self.following = np.asarray(following, dtype=np.int64)
        _, self.spot = np.unique(np.asarray(spots), axis=0, return_inverse=True)
        self.spot = self.spot.reshape(-1)
        self.hook = np.asarray([k >= len(sources) for k, _ in spots])  # positions inside an opener
        self.body_id, self.eos_id, self.vocab = body_id, eos_id, tokenizer.get_vocab_size()

    def initial(self, rows: int) -> SpanState:
        return SpanState(
            active=np.zeros((rows, self.tokens.size), dtype=bool),
            fresh=np.ones(rows, dtype=bool),
            in_body=np.zeros(rows, dtype=bool),
            used=np.zeros((rows, int(self.spot.max()) + 1), dtype=bool),
        )

    def _openings(self, state: SpanState, row: int) -> np.ndarray:
        """Where this row's headline or body may begin: a text not yet copied; for a body, a hook too."""
        allowed = self.opens & ~state.used[row][self.spot]
        return allowed if state.in_body[row] else allowed & ~self.hook

    def _at_clause_end(self, state: SpanState, row: int) -> bool:
        return bool((state.active[row] & self.ends).any())

    def mask(self, state: SpanState) -> np.ndarray:
        """(rows, vocab) bool: the tokens each row may write next."""
        masks = np.zeros((state.active.shape[0], self.vocab), dtype=bool)
        for row in range(masks.shape[0]):
            nxt = self.following[state.active[row]]
            masks[row, nxt[nxt >= 0]] = True
            if state.fresh[row]:
                masks[row, self.tokens[self._openings(state, row)]] = True
            elif self._at_clause_end(state, row):
                masks[row, self.tokens[self.starts & ~state.used[row][self.spot]]] = True
                masks[row, self.eos_id if state.in_body[row] else self.body_id] = True
            if not masks[row].any():  # cannot happen with non-empty sources; never leave a row without a move
                masks[row, self.eos_id] = True
        return masks

    def advance(self, state: SpanState, chosen: np.ndarray) -> None:
        """Move each row's state past the token it wrote."""
        for row, token in enumerate(chosen.tolist()):
            if token in (self.body_id, self.eos_id):
                state.in_body[row] |= token == self.body_id
                state.fresh[row] = True
                state.active[row] = False
                continue
            before = state.active[row]
            moved = np.zeros_like(before)
            moved[1:] = before[:-1] & (self.following[:-1] == token)  # continue a span
            if state.fresh[row]:
                moved |= self._openings(state, row) & (self.tokens == token)
            elif self._at_clause_end(state, row):
                moved |= self.starts & ~state.used[row][self.spot] & (self.tokens == token)
            state.active[row] = moved
            state.used[row][self.spot[moved]] = True
            state.fresh[row] = False
