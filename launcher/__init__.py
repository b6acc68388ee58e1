"""Run nginx + uWSGI + mules locally (``make serve``) and in tests, with the image's files."""
