"""Small Flask and Django apps with the same views, for the reliability tests.

Both read the environment the tests set (see tests/reliability/support.py):
PGPOOL_APP_DSN (the database), PGPOOL_APP_POOL (a JSON dict of ForkSafePool
options), PGPOOL_APP_SETTINGS (a JSON dict of more settings, for the bad
configurations) and PGPOOL_APP_IMPORT_QUERY ("0": no query at import).
"""
