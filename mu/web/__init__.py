"""The web app: Bottle routes for pages (`pages`, `admin`, `auth`) and the JSON API (`api`),
with the cross-cutting rules (who is signed in, CSRF, security headers) in `common`."""

import os

import bottle

from . import admin, api, auth, bodies, common, pages, settings

VIEWS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "views")


def _views_folder() -> str:
    """views/ on disk; inside the single-file build (a zip), unpacked once to a private
    temporary folder, since Bottle reads templates and static files by path."""
    if os.path.isdir(VIEWS):
        return VIEWS
    import atexit
    import shutil
    import tempfile
    import zipfile
    archive = VIEWS
    while archive and not os.path.isfile(archive):
        archive = os.path.dirname(archive)
    target = tempfile.mkdtemp(prefix="mu-views-")
    atexit.register(shutil.rmtree, target, True)
    with zipfile.ZipFile(archive) as z:
        z.extractall(target, [n for n in z.namelist() if n.startswith("views/")])
    return os.path.join(target, "views")


def make_web_app(app):
    """A WSGI application for `app` (an mu.app.App)."""
    views = _views_folder()
    bottle.TEMPLATE_PATH[:] = [views]
    bottle.BaseRequest.MEMFILE_MAX = 1024 * 1024
    web = bottle.Bottle(catchall=True)
    web.config["mu.app"] = app
    common.install(web, app)
    bodies.install(web, app)
    auth.install(web, app)
    pages.install(web, app)
    settings.install(web, app)
    admin.install(web, app)
    api.install(web, app)

    @web.get("/static/<path:path>")
    def static(path):
        response = bottle.static_file(path, root=os.path.join(views, "static"))
        response.set_header("Cache-Control", "public, max-age=3600")
        return response

    @web.get("/.well-known/acme-challenge/<token>")
    def acme_challenge(token):
        # certbot --webroot: the HTTP-01 token file it wrote under MU_ACME_WEBROOT (RFC 8555 §8.3).
        root = app.config.acme_webroot
        if not root or not token or len(token) > 256 or not all(c.isalnum() or c in "-_" for c in token):
            raise bottle.HTTPError(404, "Not found")
        return bottle.static_file(token, root=os.path.join(root, ".well-known", "acme-challenge"),
                                  mimetype="text/plain")

    return common.ProxyHeaders(common.SecurityHeaders(web), app.config.trusted_proxies)
