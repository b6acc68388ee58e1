"""A real MLflow for the tests: its tracking server (server.py) and models logged with its own API (log_models.py)."""
