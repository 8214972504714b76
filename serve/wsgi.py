"""Gunicorn entry point: `gunicorn serve.wsgi:app`. Settings come from the environment (SHELFGRAPH_*);
each worker process builds its own index and poller (threads do not survive gunicorn's fork)."""

from serve import create_app
from serve.settings import ServeSettings

app = create_app(ServeSettings())
