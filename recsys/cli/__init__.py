"""The `recsys` command line, one module per command group. It is the composition root: the only code that
imports both the batch side and the online side, and it imports them inside the commands, so `recsys serve`
and `recsys recommend` never import torch."""

import typer

from recsys.cli import batch, bench, bundles, data, models, serve

app = typer.Typer(help="Generative recommender: data, training, evaluation, export and serving.", no_args_is_help=True)
app.add_typer(data.app, name="data")
app.add_typer(models.app)
app.add_typer(bundles.app, name="bundle")
app.add_typer(bundles.commands)
app.add_typer(batch.commands)
app.add_typer(batch.report_app, name="report")
app.add_typer(bench.app, name="benchmark")
app.add_typer(serve.app)

__all__ = ["app"]
