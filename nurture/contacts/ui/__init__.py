"""Contact pages; one module per area, all on the ``contacts`` blueprint."""

from flask import Blueprint

bp = Blueprint("contacts", __name__)

# The modules register their routes on ``bp`` when imported.
from nurture.contacts.ui import (  # noqa: E402, F401
    custom_fields,
    duplicates,
    imports,
    people,
    segments,
)
