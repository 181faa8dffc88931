"""Consent pages for marketers and admins: topics, signup forms, proof, export and erasure."""

from flask import Blueprint

bp = Blueprint("consent", __name__)

from nurture.consent import merge_hook  # noqa: E402, F401  (registers the consent merge hook)
from nurture.consent.ui import gdpr, topics  # noqa: E402, F401
