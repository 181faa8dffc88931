"""Pages for recipients, reached without login: signup, confirmation, unsubscribe, preferences."""

from flask import Blueprint

bp = Blueprint("public", __name__)

from nurture.consent.public import links, signup  # noqa: E402, F401
