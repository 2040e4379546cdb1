from recsys.cli import app

app()
