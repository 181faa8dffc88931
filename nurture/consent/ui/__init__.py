"""Consent pages for marketers and admins: topics, signup forms, proof, export and erasure."""

from flask import Blueprint

bp = Blueprint("consent", __name__)

# Imported for what they register: the consent merge hook and the "consent" segment condition.
from nurture.consent import merge_hook, segment_conditions  # noqa: E402, F401
from nurture.consent.ui import gdpr, repermission, topics  # noqa: E402, F401
