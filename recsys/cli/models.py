"""Train, evaluate and export one model, and answer from a bundle: the step-by-step path."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from recsys.cli.common import console, fail, load_prepared, model_card, open_bundle, trains
from recsys.console import metrics_table, print_recommendations
from recsys.settings import get_settings

app = typer.Typer()


@app.command()
@trains
def train(
    dataset: Path = typer.Option(..., help="prepared dataset directory (recsys data import)"),
    out: Path = typer.Option(..., help="directory to save the trained model in"),
    model: str = typer.Option("lm", help="lm | als | popularity"),
    preset: str = typer.Option("synthetic", help="training/presets/<name>.json or a path"),
    base_model: Path = typer.Option(None, help="local checkpoint to start from (ours: warm start; HF: base LM)"),
    epochs: int = typer.Option(None, help="override the preset's epochs"),
    seed: int = typer.Option(None, help="override the preset's seed"),
) -> None:
    """Fit a model on the training part of the leave-one-out split; keeps the best validation checkpoint."""
    from training import pipeline
    from training.presets import load_preset

    try:
        chosen = load_preset(preset, {"epochs": epochs, "seed": seed})
        recommender = pipeline.new_model(model, chosen, base_model)
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    prepared = load_prepared(dataset)
    data = pipeline.split(prepared, chosen.max_len)
    stats = pipeline.fit(recommender, data, prepared)
    from training.lm.distributed import current

    if current().is_main:  # under torchrun every process trains the same model; one saves it
        recommender.save(out)
        console.print(f"saved {model} model to [bold]{out}[/]: {stats}")


@app.command("train-copy")
@trains
def train_copy(
    dataset: Path = typer.Option(..., help="prepared dataset directory with a catalogue (recsys data import)"),
    out: Path = typer.Option(..., help="directory for the copy model (ONNX decoder, tokenizer, weights)"),
    max_minutes: float = typer.Option(10.0, help="training time budget"),
    epochs: int = typer.Option(30, min=1),
    seed: int = typer.Option(0),
) -> None:
    """Fine-tune the ad-copy model on the catalogue's text and export it for the service."""
    from recsys.adcopy.facts import CatalogueFacts
    from recsys.adcopy.records import records_from_catalogue
    from training.adcopy.finetune import CopyTrainConfig, export_copy_model, fine_tune_copy

    prepared = load_prepared(dataset)
    if prepared.catalogue is None:
        fail(f"{dataset} has no catalogue: ad copy is written from catalogue records (import one with --catalogue)")
    records = records_from_catalogue(prepared.catalogue)
    config = CopyTrainConfig(max_minutes=max_minutes, epochs=epochs, seed=seed)
    trained = fine_tune_copy(
        list(records.values()), CatalogueFacts.from_records(records.values()), config, console.print
    )
    export_copy_model(trained.model, trained.tokenizer, out)
    console.print(f"copy model written to [bold]{out}[/]: {trained.stats}")


@app.command("evaluate")
def evaluate_command(
    dataset: Path = typer.Option(..., help="prepared dataset directory"),
    model_dir: Path = typer.Option(None, help="a saved model directory"),
    bundle: Path = typer.Option(None, help="or a bundle (directory or bundles root): evaluates the ONNX+FAISS path"),
    max_len: int = typer.Option(None, help="input length (default: the model's; required for models without one)"),
    out: Path = typer.Option(None, help="write the metrics JSON here"),
) -> None:
    """Evaluate under the protocol: full ranking, masked (headline) and unmasked, test and valid."""
    if (model_dir is None) == (bundle is None):
        fail("give exactly one of --model-dir or --bundle")
    prepared = load_prepared(dataset)
    if bundle is not None:
        scorer = open_bundle(bundle)
        length = max_len or scorer.max_len
    else:
        from recsys.models.base import read_card
        from training.pipeline import load_model

        scorer = load_model(model_dir)
        # the LM knows its window; a baseline (popularity, ALS) has none unless its card records the preset's
        length = max_len or getattr(scorer, "max_len", None) or read_card(model_dir).get("max_len")
        if length is None:
            fail(f"{model_dir} holds a {scorer.kind} model, which has no input length: give --max-len (the preset's)")
    from recsys.data.sequences import build_sequences, leave_one_out
    from recsys.evaluate import evaluate

    data = leave_one_out(build_sequences(prepared.events, prepared.vocab), length)
    test = evaluate(scorer, data.test)
    result = {
        "test": test["masked"],
        "test_unmasked": test["unmasked"],
        "valid": evaluate(scorer, data.valid)["masked"],
    }
    console.print(metrics_table("test (masked headline)", {"model": result}))
    console.print(metrics_table("test (unmasked)", {"model": result}, "test_unmasked"))
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2))
        console.print(f"metrics written to {out}")


@app.command()
def export(
    dataset: Path = typer.Option(..., help="prepared dataset directory the model was trained on"),
    model_dir: Path = typer.Option(..., help="a saved LM directory"),
    bundles: Path = typer.Option(None, help="bundles root (default: <work_dir>/bundles)"),
    promote: bool = typer.Option(True, help="point CURRENT at the new bundle after it verifies"),
    copy_model: Path = typer.Option(None, help="ad-copy model folder (`recsys train-copy`); none: template copy"),
    adcopy_top_k: int = typer.Option(3, min=1, max=50, help="the bundle carries copy for each user's top-k"),
) -> None:
    """Export the LM as a bundle: ONNX user encoder, FAISS index, catalogue, histories, ad copy, manifest."""
    from recsys.data.sequences import build_sequences
    from training.export import AdCopyPlan, export_bundle
    from training.pipeline import data_snapshot, load_model

    prepared = load_prepared(dataset)
    model = load_model(model_dir)
    if model.kind not in ("lm", "lm-ensemble"):
        fail(f"only the generative model (or an ensemble) exports to a bundle; {model_dir} holds a {model.kind} model")
    root = bundles or get_settings().bundles_dir
    path = export_bundle(
        model,
        build_sequences(prepared.events, model.vocab),
        root,
        prepared.catalogue,
        {"data_snapshot": data_snapshot(dataset), "config": model_card(model_dir)},
        promote=promote,
        adcopy=AdCopyPlan(copy_model, adcopy_top_k),
    )
    console.print(f"bundle written to [bold]{path}[/]" + (" and promoted" if promote else ""))


@app.command()
def recommend(
    bundle: Path = typer.Option(None, help="bundle directory or bundles root (default: <work_dir>/bundles)"),
    user: str = typer.Option(None, help="a known user ID"),
    history: str = typer.Option(None, help="or comma-separated item IDs of an anonymous history"),
    k: int = typer.Option(10, "--k", "-k", help="how many items (1..1000)"),
    exclude_seen: bool = typer.Option(True, help="leave out items already in the history"),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
) -> None:
    """Recommend from a bundle alone (onnxruntime + FAISS; torch is never imported)."""
    if (user is None) == (history is None):
        fail("give exactly one of --user or --history")
    engine = open_bundle(bundle or get_settings().bundles_dir)
    try:
        if user is not None:
            result = engine.recommend_for_user(user, k, exclude_seen)
        else:
            result = engine.recommend_for_history([h for h in history.split(",") if h], k, exclude_seen)
    except ValueError as exc:
        fail(str(exc), code=2)
    print_recommendations(console, engine, result, as_json)
