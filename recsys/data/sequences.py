"""User sequences and the leave-one-out split of the evaluation protocol (the contract every published figure uses).

Each user's events are sorted by (timestamp, original row order). Users with at least 3 events are evaluated:
the last event is the test target, the second-to-last the validation target. Users with fewer events are kept
for training only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from recsys.data.vocab import ItemVocab

MIN_EVENTS_FOR_EVALUATION = 3


@dataclass
class Sequences:
    """Time-ordered item-index sequences, one per user."""

    user_ids: list[str]
    items: list[np.ndarray]  # int64 dense item indices, oldest first


def build_sequences(events: pl.DataFrame, vocab: ItemVocab) -> Sequences:
    """Group validated events (user_id, item_id, timestamp, row) into per-user sequences of item indices."""
    lookup = pl.DataFrame({"item_id": vocab.item_ids, "item_index": np.arange(len(vocab), dtype=np.int64)})
    grouped = (
        events.select("user_id", "item_id", "timestamp", "row")
        .join(lookup, on="item_id", how="inner")
        .sort("user_id", "timestamp", "row")
        .group_by("user_id", maintain_order=True)
        .agg(pl.col("item_index"))
    )
    return Sequences(
        user_ids=grouped["user_id"].cast(pl.String).to_list(),
        items=[np.asarray(s, dtype=np.int64) for s in grouped["item_index"].to_list()],
    )


@dataclass
class HoldoutSet:
    """Inputs and targets of one evaluation split: inputs[i] (at most max_len items) precede targets[i]."""

    user_ids: list[str]
    inputs: list[np.ndarray]
    targets: np.ndarray

    def __len__(self) -> int:
        return len(self.targets)

    def subset(self, n: int, seed: int = 0) -> HoldoutSet:
        """A fixed random subset of n users (all of them when n >= len)."""
        if n >= len(self):
            return self
        chosen = np.sort(np.random.default_rng(seed).choice(len(self), size=n, replace=False))
        return HoldoutSet([self.user_ids[i] for i in chosen], [self.inputs[i] for i in chosen], self.targets[chosen])


@dataclass
class LeaveOneOut:
    train: Sequences  # what models fit on: every sequence minus its validation and test events
    valid: HoldoutSet
    test: HoldoutSet
    max_len: int
    train_with_valid: Sequences  # every sequence minus its test event: for a refit once epochs are chosen


def leave_one_out(sequences: Sequences, max_len: int) -> LeaveOneOut:
    """Split per the protocol: test = last event, validation = second-to-last, inputs = up to max_len before."""
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    train_items: list[np.ndarray] = []
    train_with_valid: list[np.ndarray] = []
    valid_users, valid_inputs, valid_targets = [], [], []
    for user_id, seq in zip(sequences.user_ids, sequences.items, strict=True):
        if len(seq) < MIN_EVENTS_FOR_EVALUATION:
            train_items.append(seq)
            train_with_valid.append(seq)
            continue
        train_items.append(seq[:-2])
        train_with_valid.append(seq[:-1])
        valid_users.append(user_id)
        valid_inputs.append(seq[:-2][-max_len:])
        valid_targets.append(seq[-2])
    test_users, test_inputs, test_targets = [], [], []
    for user_id, seq in zip(sequences.user_ids, sequences.items, strict=True):
        if len(seq) >= MIN_EVENTS_FOR_EVALUATION:
            test_users.append(user_id)
            test_inputs.append(seq[:-1][-max_len:])
            test_targets.append(seq[-1])
    return LeaveOneOut(
        train=Sequences(list(sequences.user_ids), train_items),
        valid=HoldoutSet(valid_users, valid_inputs, np.asarray(valid_targets, dtype=np.int64)),
        test=HoldoutSet(test_users, test_inputs, np.asarray(test_targets, dtype=np.int64)),
        max_len=max_len,
        train_with_valid=Sequences(list(sequences.user_ids), train_with_valid),
    )


@dataclass
class MultiStepHoldout:
    """The last `n` events of each evaluated user are the future to predict; models fit on what precedes them."""

    train: Sequences
    valid: HoldoutSet  # next single event after the training part, for early stopping
    user_ids: list[str]
    inputs: list[np.ndarray]
    futures: list[np.ndarray]  # the actual next n events, in time order


def multi_step_holdout(sequences: Sequences, n: int, max_len: int) -> MultiStepHoldout:
    """Users with at least n + 3 events are evaluated on their last n; everything before is for training
    (minus one validation event), so no event of the future is ever trained on."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    train_items, valid_users, valid_inputs, valid_targets = [], [], [], []
    users, inputs, futures = [], [], []
    for user_id, seq in zip(sequences.user_ids, sequences.items, strict=True):
        if len(seq) < n + MIN_EVENTS_FOR_EVALUATION:
            train_items.append(seq)
            continue
        past, future = seq[:-n], seq[-n:]
        train_items.append(past[:-1])
        valid_users.append(user_id)
        valid_inputs.append(past[:-1][-max_len:])
        valid_targets.append(past[-1])
        users.append(user_id)
        inputs.append(past[-max_len:])
        futures.append(future)
    return MultiStepHoldout(
        train=Sequences(list(sequences.user_ids), train_items),
        valid=HoldoutSet(valid_users, valid_inputs, np.asarray(valid_targets, dtype=np.int64)),
        user_ids=users,
        inputs=inputs,
        futures=futures,
    )
