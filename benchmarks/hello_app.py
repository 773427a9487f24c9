"""Hello-world Flask app: the floor bench_load compares the app against, under the same gunicorn settings."""

from flask import Flask

app = Flask(__name__)


@app.get("/")
def hello() -> str:
    return "<!doctype html><title>hello</title><p>Hello, world.</p>"
