"""`recsys demo`: the main job end to end on the embedded synthetic data, in a few minutes on 2 cores."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from recsys.console import metrics_table, print_recommendations
from recsys.synthetic import write_synthetic
from serving.engine import BundleRecommender
from training import pipeline
from training.export import export_bundle
from training.presets import load_preset


def run_demo(work_dir: Path, data_preset: str, seed: int, console: Console) -> Path:
    work_dir = Path(work_dir)
    demo_dir = work_dir / "demo"
    console.rule("1/5 data: synthetic events + catalogue -> validate -> prepared dataset")
    events_csv, catalogue_csv = write_synthetic(demo_dir / "raw", data_preset, seed)
    prepared = pipeline.prepare(events_csv, "csv", demo_dir / "dataset", catalogue_path=catalogue_csv)
    console.print(prepared.summary)

    preset = load_preset("synthetic", {"seed": seed})
    data = pipeline.split(prepared, preset.max_len)
    console.rule("2/5 train: popularity, implicit ALS, the generative LM")
    models, results = {}, {}
    for kind in pipeline.MODEL_KINDS:
        model = pipeline.new_model(kind, preset)
        stats = pipeline.fit(model, data, prepared)
        model.save(demo_dir / "models" / kind)
        models[kind] = model
        results[kind] = {**pipeline.evaluate_splits(model, data, stats.pop("valid_metrics", None)), **stats}

    console.rule("3/5 evaluate (full ranking, leave-one-out)")
    console.print(metrics_table("test, history items masked (headline)", results))
    console.print(metrics_table("test, unmasked", results, "test_unmasked"))
    pipeline.write_json(demo_dir / "metrics.json", pipeline.results_document("synthetic", "recsys demo", results))

    console.rule("4/5 export: ONNX user encoder + FAISS index -> bundle -> verify -> promote CURRENT")
    lm = models["lm"]
    bundle_dir = export_bundle(
        lm,
        pipeline.build_sequences(prepared.events, prepared.vocab),
        work_dir / "bundles",
        prepared.catalogue,
        {
            "data_snapshot": pipeline.data_snapshot(demo_dir / "dataset"),
            "metrics": results["lm"],
            "config": preset.name,
        },
        promote=True,
    )
    console.print(f"promoted bundle [bold]{bundle_dir}[/]")

    console.rule("5/5 recommend from the bundle (onnxruntime + FAISS)")
    engine = BundleRecommender(work_dir / "bundles")
    for user_id in data.test.user_ids[:3]:
        print_recommendations(console, engine, engine.recommend_for_user(user_id, k=5), as_json=False)
    print_recommendations(console, engine, engine.recommend_for_user("no-such-user", k=5), as_json=False)
    console.print(
        f"\nTry it yourself: [bold].venv/bin/recsys recommend --bundle {work_dir / 'bundles'} "
        f"--user {data.test.user_ids[0]}[/]"
    )
    return bundle_dir
