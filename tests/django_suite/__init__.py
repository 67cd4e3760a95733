"""Django's own test suite, run against django_pgpool and Django's backend."""
