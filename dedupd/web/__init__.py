"""The review page: ``dedupd review`` (app, templates, static files)."""
