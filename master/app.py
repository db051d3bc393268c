"""The Flask application factory: create_app(settings) -> the API (and, later, the web UI)."""
import logging
import os

from flask import Flask, jsonify

from master import settings as settings_mod
from master.store import open_store


def create_app(settings=None, **overrides):
    s = settings or settings_mod.load(**overrides)
    app = Flask("genefarm")
    engine, Session = open_store(s.db_url)
    app.config.update(SETTINGS=s, SESSIONMAKER=Session, ENGINE=engine, JSON_SORT_KEYS=False)
    from master.api import bp
    app.register_blueprint(bp)

    @app.errorhandler(404)
    def _nf(_e):
        return jsonify(error="no such endpoint; the API is under /api/v1/"), 404

    @app.errorhandler(405)
    def _na(_e):
        return jsonify(error="method not allowed on this endpoint"), 405

    logging.basicConfig(filename=os.path.join(s.dir("logs"), "master.log"), level=logging.INFO,
                        format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s")
    return app
