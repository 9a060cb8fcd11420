"""``dpt serve``: the OpenLineage receiver, the JSON read API and the web explorer.

Imported only by ``dpt serve`` (and tests): ``dpt_core`` never imports web
libraries anywhere else. :func:`dpt_core.server.app.create_app` builds the ASGI
application from the routes of :mod:`dpt_core.server.api` (JSON) and
:mod:`dpt_core.server.explorer` (HTML).
"""
