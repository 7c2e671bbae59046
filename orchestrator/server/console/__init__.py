"""The browser console at ``/console``: static files the API app serves, talking to the public API only.

Runs in: the serving process (the files run in the browser). May import: ``starlette`` (files and routes); the page
itself calls ``/v1/models``, ``/v1/pool``, ``/v1/chat/completions`` (streamed, with ``moesaic.events``) and
``/v1/routing/evaluate`` over HTTP, with the API key the user typed, kept in the tab's sessionStorage.

``static/`` holds the whole page: ``index.html``, ``console.css`` and plain ES modules, one job each (``console.js``
wires the key and the tabs; ``ask.js``, ``pool.js``, ``routing.js`` are the views; ``chart.js`` draws the frontier;
``api.js`` makes the calls; ``dom.js`` builds elements): no framework, no build step, nothing fetched from the
network. ``routes`` serves them with a content security policy that allows only this origin.
"""

from orchestrator.server.console.routes import console_routes

__all__ = ["console_routes"]
