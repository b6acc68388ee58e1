"""The base image's demo app (replaced by the project's)."""

from flask import Flask

app = Flask(__name__)


@app.route("/")
def hello() -> str:
    return "Hello World from Flask in a uWSGI Nginx Docker container"
