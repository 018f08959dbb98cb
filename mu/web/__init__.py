"""The web app: Bottle routes for pages (`pages`, `admin`, `auth`) and the JSON API (`api`),
with the cross-cutting rules (who is signed in, CSRF, security headers) in `common`."""

import os

import bottle

from . import admin, api, auth, common, pages

VIEWS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "views")


def make_web_app(app):
    """A WSGI application for `app` (an mu.app.App)."""
    bottle.TEMPLATE_PATH[:] = [VIEWS]
    bottle.BaseRequest.MEMFILE_MAX = 1024 * 1024
    web = bottle.Bottle(catchall=True)
    web.config["mu.app"] = app
    common.install(web, app)
    auth.install(web, app)
    pages.install(web, app)
    admin.install(web, app)
    api.install(web, app)

    @web.get("/static/<path:path>")
    def static(path):
        response = bottle.static_file(path, root=os.path.join(VIEWS, "static"))
        response.set_header("Cache-Control", "public, max-age=3600")
        return response

    return common.SecurityHeaders(web)
