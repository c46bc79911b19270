"""Runs the moderation worker (``guardstream worker``)."""

from __future__ import annotations

import asyncio
import logging

from guard.settings import Settings

log = logging.getLogger(__name__)


def run_worker(s: Settings) -> int:
    from faust import Worker

    from stream_app.agents import register
    from stream_app.app import create_app
    from stream_app.topics import create_topics

    created = asyncio.run(create_topics(s))
    if created:
        log.info("created topics: %s", ", ".join(created))
    app = create_app(s)
    register(app, s)
    worker = Worker(app, loglevel=s.log_level.lower(), quiet=True)
    worker.execute_from_commandline()
    return 0
