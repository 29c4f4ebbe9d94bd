"""How the world asks: the app factory (``shelby.api.app.create_app``), credentials,
errors, one module per group of endpoints, the views they share with the websockets,
and the OpenAPI document.

Nothing is imported here, so that importing one module (``shelby.api.views`` from the
websockets, say) does not pull in the whole app.
"""

__all__: list[str] = []
