"""genefarm master: Flask app, REST API, SQLAlchemy store, region planner, pipeline, scheduler backends, poller."""
