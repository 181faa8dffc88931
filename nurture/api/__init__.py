"""The JSON API under /api/v1: Bearer tokens, JSON errors, an OpenAPI document."""

from flask import Blueprint

bp = Blueprint("api", __name__, url_prefix="/api/v1")

from nurture.api import views  # noqa: E402,F401  (registers the routes)
from nurture.consent import api_consents as consents_routes  # noqa: E402,F401
from nurture.consent import api_subscriptions  # noqa: E402,F401
from nurture.consent import api_unsubscribe as unsubscribe_routes  # noqa: E402,F401
from nurture.contacts import api as contacts_api  # noqa: E402,F401
from nurture.contacts import custom_fields_api  # noqa: E402,F401
from nurture.contacts import segments_api as segment_routes  # noqa: E402,F401
