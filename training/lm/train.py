"""The fine-tuning loop: next-item cross-entropy over the full item vocabulary (or a sampled softmax).

Reads top to bottom: examples (sequence windows) -> length-bucketed batches -> AdamW with warmup + cosine
decay, gradient clipping -> (optionally) an exponential moving average of the weights -> validation NDCG@10
every `eval_every` epochs, of the averaged weights when there are any -> early stopping, best weights kept.
A non-finite epoch loss or validation NDCG@10 stops training with `TrainingDiverged`: NaN weights never
compare as "best", so without the check training would go on and hand back garbage.

The same loop runs data-parallel under `torchrun` (training/lm/distributed.py): every process draws the same
global batches, takes its own slice of each, and DistributedDataParallel averages the gradients. Each
slice's loss is weighted by its share of the global batch's tokens, so N processes compute the gradient of
exactly the loss one process computes on the whole batch (same batches, same schedule): only the order of
floating-point sums differs. Validation is sharded over the processes and summed. With `loss="sampled"` each
process's in-batch negatives are its own slice's targets (the uniform negatives are the same everywhere), so
there the N-process loss is close to, not exactly, the one-process loss.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from transformers import get_cosine_with_min_lr_schedule_with_warmup

from recsys.data.sequences import HoldoutSet, Sequences
from recsys.evaluate import NonFiniteScores, evaluate
from recsys.tokens import PAD_TOKEN_ID
from training.lm import distributed
from training.lm.attention import fast_dropout, training_attention
from training.lm.distributed import World
from training.lm.model import PRECISIONS, GenerativeRecommender, TrainConfig


class TrainingDiverged(RuntimeError):
    """The loss or the validation metric stopped being a finite number: nothing trained from here is usable."""

    def __init__(self, epoch: int, what: str):
        super().__init__(
            f"training diverged in epoch {epoch}: {what}. Nothing was saved; lower the learning rate, keep "
            "gradient clipping on, or train in fp32, then train again."
        )
        self.epoch = epoch


def training_windows(train: Sequences, max_len: int) -> list[np.ndarray]:
    """Cut each sequence into windows of at most max_len + 1 items, from the end backwards.

    A window of n items gives n - 1 next-item targets, so long histories (MovieLens) are used in full
    instead of only their last max_len items.
    """
    windows = []
    for seq in train.items:
        end = len(seq)
        while end >= 2:
            start = max(0, end - max_len - 1)
            windows.append(seq[start:end])
            end = start + 1 if start > 0 else 0  # the next window predicts the item this one starts with
    return windows


def bucketed_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Batches of similar lengths (little padding), in random order; shuffled anew every epoch."""
    order = rng.permutation(len(lengths))
    chunk = batch_size * 50
    batches = []
    for start in range(0, len(order), chunk):
        part = order[start : start + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches.extend(part[i : i + batch_size] for i in range(0, len(part), batch_size))
    rng.shuffle(batches)
    return batches


def collate(windows: list[np.ndarray], token_offset: int) -> tuple[torch.Tensor, ...]:
    """Right-padded inputs, mask and item-index labels (-100 on padding) for next-item prediction."""
    width = max(len(w) for w in windows) - 1
    ids = np.full((len(windows), width), PAD_TOKEN_ID, dtype=np.int64)
    labels = np.full((len(windows), width), -100, dtype=np.int64)
    for row, w in enumerate(windows):
        n = len(w) - 1
        ids[row, :n] = w[:-1] + token_offset
        labels[row, :n] = w[1:]
    mask = (labels != -100).astype(np.int64)
    return torch.from_numpy(ids), torch.from_numpy(mask), torch.from_numpy(labels)


class FusedLinearCrossEntropy(torch.autograd.Function):
    """Cross-entropy of `hidden @ weight.T` without materialising all the logits.

    The full-vocabulary softmax is memory-bound on CPU: for 12k tokens x 3.6k items the logits and their
    gradient are ~350 MB that stream through memory twice. Here the logits of `chunk` tokens at a time stay
    in cache, and the gradients (softmax - one-hot) are computed in the forward pass, so backward only
    scales them. Same values as F.cross_entropy (tested); about 2x faster on the training step's largest op.
    """

    @staticmethod
    def forward(
        ctx,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        labels: torch.Tensor,
        chunk: int,
        dtype: torch.dtype,
        adjust_logits: Callable[[torch.Tensor, int], None] | None = None,
    ) -> torch.Tensor:
        """`adjust_logits(logits, start)`, when given, edits the float32 logits of rows start.. in place before
        the softmax (the sampled loss's corrections and masks); they are constants, so the gradient is the same
        softmax - one-hot."""
        n = hidden.shape[0]
        grad_hidden = torch.empty_like(hidden)
        grad_weight = torch.zeros_like(weight)
        total = hidden.new_zeros(())
        # the products run in `dtype` (bfloat16 under mixed precision); softmax and sums in float32
        hidden_m, weight_m = hidden.to(dtype), weight.to(dtype)
        for start in range(0, n, chunk):
            h, y = hidden_m[start : start + chunk], labels[start : start + chunk]
            logits = (h @ weight_m.T).float()
            if adjust_logits is not None:
                adjust_logits(logits, start)
            log_norm = torch.logsumexp(logits, dim=1)
            total += (log_norm - logits.gather(1, y[:, None]).squeeze(1)).sum()
            probs = logits.sub_(log_norm[:, None]).exp_()
            probs[torch.arange(len(y), device=y.device), y] -= 1.0
            probs = probs.to(dtype)
            grad_hidden[start : start + chunk] = probs @ weight_m
            grad_weight += probs.T @ h
        ctx.save_for_backward(grad_hidden / n, grad_weight / n)
        return total / n

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        grad_hidden, grad_weight = ctx.saved_tensors
        return grad_hidden * grad_output, grad_weight * grad_output, None, None, None, None


def fused_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    chunk: int = 512,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    if not torch.is_grad_enabled():
        return F.cross_entropy((hidden.to(dtype) @ weight.to(dtype).T).float(), labels)
    return FusedLinearCrossEntropy.apply(hidden.float(), weight, labels, chunk, dtype)


class UniformNegatives:
    """Item rows drawn uniformly, with replacement, from the catalogue: the sampled loss's shared negatives.

    The draws index the item rows of `item_embeddings()`, which hold items only: <pad>, <bos> and a text
    base's tokens sit outside them and can never be drawn. With replacement the cost is O(count) at any
    catalogue size, and count / n_items is exactly each item's expected number of draws, the Q that the log-Q
    correction divides by. With a seed the sampler owns its generator: runs are reproducible, and every DDP
    process draws the same negatives at the same step; without one it draws from torch's global generator.
    """

    def __init__(self, count: int, seed: int | None = None):
        self.count, self.seed = count, seed
        self._generators: dict[str, torch.Generator] = {}

    def __call__(self, n_items: int, device: torch.device) -> torch.Tensor:
        generator = None
        if self.seed is not None:
            generator = self._generators.get(str(device))
            if generator is None:
                generator = self._generators[str(device)] = torch.Generator(device).manual_seed(self.seed)
        return torch.randint(0, n_items, (self.count,), generator=generator, device=device)


def sampled_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    negatives: torch.Tensor,
    logq_correction: bool = True,
    chunk: int = 512,
    dtype: torch.dtype = torch.float32,
    target_frequency: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sampled softmax: each target against the batch's targets and `negatives`, not against every item.

    Row r's candidates are its target (the positive), the target of every position in the batch (in-batch
    negatives: an item that is c of the batch's targets is c candidates) and `negatives` (item rows drawn
    uniformly, shared by every row). With `logq_correction` each negative's logit is lowered by the log of its
    expected number of draws Q: c for an in-batch item, so each distinct item present counts once however
    popular (uncorrected, the batch's popular items are pushed down c times over), and len(negatives) / n_items
    for a uniform draw, so the draws stand for the whole catalogue (their corrected exp-sum is an unbiased
    estimate of the full softmax's sum over all items). The positive keeps its logit. A negative equal to the
    row's positive (an accidental hit: the row's own target, the same item at another position, a draw) is
    masked out.

    Computed with one column per distinct in-batch item: c copies of logit s - log Q have the logsumexp of one
    column with logit s + log c - log Q (= s with the correction). The products run in `dtype`; the softmax
    and sums in float32, through the same chunked kernel as the full loss.

    With `target_frequency` (each item's share of the training targets; needs `logq_correction`) the
    correction follows popularity instead (`train.logq_popularity`): the candidates are the distinct items of
    the batch's targets and the draws, and each negative's logit is lowered by the log of its probability P of
    being a candidate at all, 1 - (1 - p)^targets * (1 - 1/n_items)^draws, so the exp-sum over the candidates
    is a Horvitz-Thompson estimate of the sum over every item. Counted once (above), a rare item that happens
    to be in the batch stands only for itself while a popular one is in nearly every batch: popular items are
    pushed down more often than the full softmax pushes them; weighted by 1 / P, each stands for its share.
    """
    if target_frequency is not None:
        if not logq_correction:
            raise ValueError("target_frequency (train.logq_popularity) needs logq_correction")
        return _popularity_corrected(hidden, weight, labels, negatives, target_frequency, chunk, dtype)
    n_items = weight.shape[0]
    batch_items, target_column, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    n_in_batch = len(batch_items)
    # only one side's columns move: the other's bias is 0 (in-batch with the correction, uniform without)
    if logq_correction:
        biased = slice(n_in_batch, None)
        bias = torch.full((len(negatives),), math.log(n_items / max(len(negatives), 1)), device=hidden.device)
    else:
        biased, bias = slice(0, n_in_batch), counts.float().log()

    def adjust_logits(logits: torch.Tensor, start: int) -> None:
        rows = torch.arange(len(logits), device=logits.device)
        positive_column = target_column[start : start + len(logits)]
        positive = logits[rows, positive_column]  # (a copy) the positive is not a negative: no correction
        logits[:, biased] += bias
        logits[rows, positive_column] = positive
        hits = labels[start : start + len(logits), None] == negatives[None, :]
        logits[:, n_in_batch:].masked_fill_(hits, -math.inf)

    candidates = torch.cat([batch_items, negatives])
    return FusedLinearCrossEntropy.apply(hidden.float(), weight[candidates], target_column, chunk, dtype, adjust_logits)


def _popularity_corrected(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    negatives: torch.Tensor,
    target_frequency: torch.Tensor,
    chunk: int,
    dtype: torch.dtype,
) -> torch.Tensor:
    """`sampled_cross_entropy` with the popularity (inclusion-probability) correction: see its docstring."""
    n_items = weight.shape[0]
    candidates = torch.unique(torch.cat([labels, negatives]))  # sorted, each item once
    target_column = torch.searchsorted(candidates, labels)
    p = target_frequency[candidates].clamp(0.0, 1.0 - 1e-7)
    log_missed = len(labels) * torch.log1p(-p) + len(negatives) * math.log1p(-1.0 / n_items)
    bias = -torch.log(-torch.expm1(log_missed))  # -log P(candidate)

    def adjust_logits(logits: torch.Tensor, start: int) -> None:
        rows = torch.arange(len(logits), device=logits.device)
        positive_column = target_column[start : start + len(logits)]
        positive = logits[rows, positive_column]  # (a copy) the positive keeps its logit
        logits += bias
        logits[rows, positive_column] = positive

    return FusedLinearCrossEntropy.apply(hidden.float(), weight[candidates], target_column, chunk, dtype, adjust_logits)


def next_item_loss(
    model: GenerativeRecommender,
    ids,
    labels,
    negatives: UniformNegatives | None = None,
    target_frequency: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cross-entropy of the next item at real positions: over every item token (`loss="full"`), or the
    sampled softmax (`loss="sampled"`) against in-batch and uniform negatives drawn by `negatives` (default:
    `train.sampled_negatives` items from torch's global generator).

    `ids` are right-padded (see `collate`): causal attention alone keeps padding out of every real position,
    so the decoder gets no padding mask (and can take the fast causal path in training/lm/attention.py).
    """
    lm, cfg = model.lm, model.train_config
    dtype = PRECISIONS[cfg.precision]  # validated by TrainConfig
    embeds = lm.get_input_embeddings()(ids)
    embeds = fast_dropout(embeds, model.config.embedding_dropout, training=lm.training)
    positions = torch.arange(ids.shape[1], device=ids.device).unsqueeze(0).expand_as(ids)
    with torch.autocast(ids.device.type, dtype=dtype, enabled=dtype != torch.float32):
        hidden = lm.get_decoder()(inputs_embeds=embeds, position_ids=positions).last_hidden_state
    real = labels != -100
    hidden, targets, items = hidden[real], labels[real], model.item_embeddings()
    if cfg.loss == "full":
        return fused_cross_entropy(hidden, items, targets, dtype=dtype)
    sampler = negatives if negatives is not None else UniformNegatives(cfg.sampled_negatives)
    drawn = sampler(model.n_items, targets.device)
    return sampled_cross_entropy(
        hidden, items, targets, drawn, cfg.logq_correction, dtype=dtype, target_frequency=target_frequency
    )


class NextItemLoss(nn.Module):
    """The loss as a module, so DistributedDataParallel can wrap it (its hooks need a forward call)."""

    def __init__(self, model: GenerativeRecommender, target_frequency: torch.Tensor | None = None):
        super().__init__()
        self.lm = model.lm  # registered as a submodule: these are the parameters DDP synchronises
        self._model = [model]  # a list: not a submodule, just the config and item-row accessors
        cfg = model.train_config
        self.negatives = UniformNegatives(cfg.sampled_negatives, seed=cfg.seed) if cfg.loss == "sampled" else None
        self.target_frequency = target_frequency

    def forward(self, ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return next_item_loss(self._model[0], ids, labels, self.negatives, self.target_frequency)


def target_frequencies(windows: list[np.ndarray], n_items: int) -> torch.Tensor:
    """Each item's share of the training targets (every window item but its first)."""
    counts = np.bincount(np.concatenate([window[1:] for window in windows]), minlength=n_items)
    return torch.from_numpy(counts / max(counts.sum(), 1)).float()


class WeightAverage:
    """Exponential moving average of the trainable weights, swapped in for evaluation and kept at the end.

    The decay ramps up as min(decay, (1 + n) / (10 + n)) after n updates, so early averages are not
    dominated by the random initial weights.
    """

    def __init__(self, model: GenerativeRecommender, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1), got {decay}")
        self.decay, self.updates = decay, 0
        self.params = [p for p in model.lm.parameters() if p.requires_grad]
        self.average = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def update(self) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        torch._foreach_lerp_(self.average, [p.detach() for p in self.params], 1.0 - decay)

    @torch.no_grad()
    def swap(self) -> None:
        """Exchange the live weights and the average (calling it twice restores the live weights)."""
        for param, average in zip(self.params, self.average, strict=True):
            live = param.detach().clone()
            param.copy_(average)
            average.copy_(live)


def _ndcg(model: GenerativeRecommender, holdout: HoldoutSet) -> float:
    try:
        return evaluate(model, holdout)["masked"]["NDCG@10"]
    except NonFiniteScores:
        return math.nan  # NaN, not an exception: under DDP every process must reach the same all-reduce


def valid_ndcg(model: GenerativeRecommender, valid: HoldoutSet, world: World) -> float:
    """Validation NDCG@10 (masked), NaN when the model's scores are not finite; under DDP each process scores
    a slice of the users, the sums are added (a NaN anywhere makes the total NaN everywhere)."""
    if not world.distributed:
        return _ndcg(model, valid)
    mine = np.array_split(np.arange(len(valid)), world.size)[world.rank]
    part = HoldoutSet([valid.user_ids[i] for i in mine], [valid.inputs[i] for i in mine], valid.targets[mine])
    ndcg = _ndcg(model, part) if len(part) else 0.0
    total, users = distributed.all_sum([ndcg * len(part), float(len(part))], world)
    return total / max(users, 1.0)


def param_groups(model: GenerativeRecommender, weight_decay: float) -> list[dict]:
    """Weight decay on matrices (embeddings included), none on norms; frozen parameters left out."""
    decay, no_decay = [], []
    for param in model.lm.parameters():
        if param.requires_grad:
            (decay if param.dim() >= 2 else no_decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def freeze_lower_layers(model: GenerativeRecommender, n: int) -> None:
    for layer in model.lm.get_decoder().layers[:n]:
        for param in layer.parameters():
            param.requires_grad_(False)


def over_budget(cfg: TrainConfig, started: float) -> bool:
    return bool(cfg.max_minutes) and (time.perf_counter() - started) / 60 > cfg.max_minutes


def fine_tune(model: GenerativeRecommender, train: Sequences, valid: HoldoutSet | None) -> None:
    cfg = model.train_config
    cfg.check_catalogue(model.n_items)
    world = distributed.init_from_env()  # World() (one process) unless started by torchrun
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)  # the same on every process: all draw the same global batches
    torch.set_num_threads(distributed.threads_per_process(world, cfg.num_threads))
    device = distributed.device(world)
    model.lm.to(device)
    freeze_lower_layers(model, cfg.freeze_layers)
    windows = training_windows(train, model.config.max_len)
    if not windows:
        raise ValueError("no training sequence has 2 or more items: nothing to learn from")
    frequency = target_frequencies(windows, model.n_items).to(device) if cfg.logq_popularity else None
    loss_module: nn.Module = NextItemLoss(model, frequency)
    if world.distributed:
        # no buffer sync per step: the only buffers are rotary tables, identical everywhere by construction
        ids = [device.index] if device.type == "cuda" else None
        loss_module = DistributedDataParallel(loss_module, device_ids=ids, forward_sync_buffers=False)

    lengths = np.array([len(w) for w in windows])
    steps_per_epoch = math.ceil(len(windows) / cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.98))
    scheduler = get_cosine_with_min_lr_schedule_with_warmup(
        optimizer,
        num_warmup_steps=int(cfg.warmup_ratio * total_steps),
        num_training_steps=total_steps,
        min_lr_rate=cfg.min_lr_ratio,
    )
    valid = valid.subset(cfg.max_valid_users, seed=cfg.seed) if valid is not None else None
    average = WeightAverage(model, cfg.ema_decay) if cfg.ema_decay else None

    best_ndcg, best_state, best_epoch, evals_without_gain = -1.0, None, cfg.epochs, 0
    started = time.perf_counter()
    tokens_seen, train_seconds = 0, 0.0
    progress = Progress(
        TextColumn("[bold]epoch {task.fields[epoch]}"),
        BarColumn(),
        TextColumn("loss {task.fields[loss]:.4f}  {task.fields[tps]:,.0f} tok/s  best NDCG@10 {task.fields[best]:.4f}"),
        TimeElapsedColumn(),
        transient=False,
        disable=not world.is_main,
    )
    with progress, training_attention(model.lm):
        task = progress.add_task("train", total=total_steps, epoch=0, loss=float("nan"), tps=0.0, best=0.0)
        for epoch in range(1, cfg.epochs + 1):
            model.lm.train()
            epoch_start, epoch_tokens, loss_sum, out_of_time = time.perf_counter(), 0, 0.0, False
            steps_done = 0
            for step, batch in enumerate(bucketed_batches(lengths, cfg.batch_size, rng), start=1):
                mine, weight = np.array_split(batch, world.size)[world.rank], 1.0
                if not len(mine):  # a last batch smaller than the process count: take part with weight 0
                    mine, weight = batch[:1], 0.0
                ids, mask, labels = (t.to(device) for t in collate([windows[i] for i in mine], model.token_offset))
                batch_tokens = int((lengths[batch] - 1).sum())
                # this slice's share of the batch's tokens (x world size: DDP averages over processes); 1.0
                # with one process, so single-process training is exactly what it always was
                share = weight * int(mask.sum()) * world.size / batch_tokens
                loss = loss_module(ids, labels)
                if share != 1.0:
                    loss = loss * share
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.lm.parameters(), cfg.grad_clip)
                optimizer.step()
                scheduler.step()
                if average is not None:
                    average.update()
                epoch_tokens += int(mask.sum()) if weight else 0
                loss_sum += loss.item() / world.size
                steps_done = step
                if step % cfg.log_every == 0 or step == steps_per_epoch:
                    tps = epoch_tokens / max(time.perf_counter() - epoch_start, 1e-9)
                    progress.update(
                        task,
                        completed=(epoch - 1) * steps_per_epoch + step,
                        epoch=epoch,
                        loss=loss_sum / step,
                        tps=tps,
                    )
                    # the budget is checked inside the epoch too: at a million users one epoch alone can be
                    # hours; every process checks at the same steps, so all stop after the same batch
                    if step < steps_per_epoch and distributed.any_true(over_budget(cfg, started), world):
                        out_of_time = True
                        break
            train_seconds += time.perf_counter() - epoch_start
            if world.distributed:  # the epoch's totals over all processes (one small all-reduce per epoch)
                loss_sum, summed_tokens = distributed.all_sum([loss_sum, float(epoch_tokens)], world)
                epoch_tokens = int(summed_tokens)
            tokens_seen += epoch_tokens
            mean_loss = loss_sum / max(steps_done, 1)
            if not math.isfinite(loss_sum):  # summed over the processes above, so all of them stop here
                raise TrainingDiverged(epoch, f"the training loss is {mean_loss}")
            # every process stops after the same epoch
            out_of_time = out_of_time or distributed.any_true(over_budget(cfg, started), world)
            if valid is None or (epoch % cfg.eval_every and epoch != cfg.epochs and not out_of_time):
                continue
            if average is not None:
                average.swap()  # evaluate (and keep, if best) the averaged weights
            ndcg = valid_ndcg(model, valid, world)
            if not math.isfinite(ndcg):
                raise TrainingDiverged(epoch, f"validation NDCG@10 is {ndcg} (the model scores NaN or +inf)")
            model.history.append(
                {
                    "epoch": epoch,
                    "loss": mean_loss,
                    "valid_NDCG@10": ndcg,
                    "wall_s": round(time.perf_counter() - started, 1),
                }
            )
            if ndcg > best_ndcg:
                best_ndcg, best_epoch, evals_without_gain = ndcg, epoch, 0
                best_state = copy.deepcopy(model.lm.state_dict())
            else:
                evals_without_gain += 1
            if average is not None:
                average.swap()  # back to the live weights to go on training
            progress.update(task, best=best_ndcg)
            say = progress.console.print if world.is_main else (lambda *_: None)
            say(
                f"epoch {epoch}: loss {mean_loss:.4f}, valid NDCG@10 {ndcg:.4f} "
                f"(best {best_ndcg:.4f}), {epoch_tokens / max(time.perf_counter() - epoch_start, 1e-9):,.0f} tok/s, "
                f"{time.perf_counter() - started:.0f} s"
            )
            if evals_without_gain >= cfg.patience or out_of_time:
                say(
                    f"stopping {'in' if steps_done < steps_per_epoch else 'after'} epoch {epoch}: "
                    + ("time budget spent" if out_of_time else f"no gain in {cfg.patience} evaluations")
                )
                break
    if best_state is not None:
        model.lm.load_state_dict(best_state)
    elif average is not None:  # no validation (e.g. a refit): the model is the final average
        average.swap()
    model.lm.to("cpu")  # everything after training (evaluation, export, serving) runs on the CPU
    model.lm.eval()
    model.stats = {
        "processes": world.size,
        "train_wall_s": round(time.perf_counter() - started, 1),
        "tokens_per_s": round(tokens_seen / max(train_seconds, 1e-9), 1),
        "epochs": epoch,
        "last_epoch_complete": steps_done == steps_per_epoch,  # False: the time budget ran out inside it
        "tokens_seen": tokens_seen,
        "best_valid_NDCG@10": best_ndcg,
        "best_epoch": best_epoch,
        "params": sum(p.numel() for p in model.lm.parameters()),
    }
