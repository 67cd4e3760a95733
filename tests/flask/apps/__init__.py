"""Flask apps for the flask_pgpool tests."""
