"""The OpenAPI 3.1 document of /api/v1. A test keeps it and the routes in step."""

from __future__ import annotations

from typing import Any

ERROR = {"$ref": "#/components/responses/Error"}
CONTACT_TEXT = (
    "email",
    "first_name",
    "last_name",
    "title",
    "company",
    "industry",
    "company_size",
    "city",
    "country",
    "customer_number",
    "phone",
    "mobile",
    "website",
    "linkedin",
    "xing",
    "source",
)
LIFECYCLES = ["lead", "customer", "at_risk", "churned", "won_back"]


def _query(name: str, kind: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": {"type": kind},
        "description": description,
    }


def _op(summary: str, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
    standard = {"401": ERROR, "default": ERROR}
    return {"summary": summary, "responses": responses | standard, **extra}


def _json(schema_ref: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema_ref}"}}}


def openapi_document(base_url: str) -> dict[str, Any]:
    token_id = {
        "name": "token_id",
        "in": "path",
        "required": True,
        "schema": {"type": "integer"},
    }
    contact_id = {
        "name": "contact_id",
        "in": "path",
        "required": True,
        "schema": {"type": "integer"},
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "nurture API",
            "version": "1",
            "description": "Contacts, consent, sequences and leads of a nurture server.",
        },
        "servers": [{"url": f"{base_url}/api/v1"}],
        "security": [{"bearer": []}],
        "paths": {
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "security": [],
                    "responses": {"200": {"description": "The OpenAPI document"}},
                }
            },
            "/me": {
                "get": _op(
                    "The user the token belongs to",
                    {"200": {"description": "The user", "content": _json("User")}},
                )
            },
            "/tokens": {
                "get": _op(
                    "The caller's API tokens (never the secrets)",
                    {"200": {"description": "Tokens", "content": _json("TokenList")}},
                ),
                "post": _op(
                    "Create a token; the secret is in this response only",
                    {
                        "201": {"description": "Created", "content": _json("NewToken")},
                        "400": ERROR,
                        "415": ERROR,
                        "422": ERROR,
                    },
                    requestBody={"required": True, "content": _json("TokenCreate")},
                ),
            },
            "/contacts": {
                "get": _op(
                    "List contacts (keyset paging) or look one up by ?email=",
                    {
                        "200": {"description": "A page", "content": _json("ContactList")},
                        "400": ERROR,
                    },
                    parameters=[
                        _query("email", "string", "exact address; normalised before lookup"),
                        _query("q", "string", "prefix of email, last name or company"),
                        _query("lifecycle", "string", "lead, customer, at_risk, churned, won_back"),
                        _query("after", "integer", "id of the last contact of the previous page"),
                        _query("limit", "integer", "1 to 500, default 50"),
                    ],
                ),
                "post": _op(
                    "Create a contact or update the one with the same email or customer number",
                    {
                        "200": {"description": "Updated", "content": _json("Contact")},
                        "201": {"description": "Created", "content": _json("Contact")},
                        "400": ERROR,
                        "403": ERROR,
                        "415": ERROR,
                        "422": ERROR,
                    },
                    requestBody={"required": True, "content": _json("ContactInput")},
                ),
            },
            "/contacts/{contact_id}": {
                "get": _op(
                    "One contact",
                    {
                        "200": {"description": "The contact", "content": _json("Contact")},
                        "404": ERROR,
                    },
                    parameters=[contact_id],
                ),
                "patch": _op(
                    "Change some fields of a contact",
                    {
                        "200": {"description": "Changed", "content": _json("Contact")},
                        "403": ERROR,
                        "404": ERROR,
                        "422": ERROR,
                    },
                    parameters=[contact_id],
                    requestBody={"required": True, "content": _json("ContactInput")},
                ),
                "delete": _erase_op(contact_id),
            },
            "/contacts/import": {
                "post": _op(
                    "Import contacts from a CSV file (UTF-8 or Windows-1252, ';' or ',')",
                    {
                        "200": {"description": "The report", "content": _json("ImportReport")},
                        "400": ERROR,
                        "403": ERROR,
                        "413": ERROR,
                        "415": ERROR,
                        "422": ERROR,
                    },
                    description=(
                        "Every valid row is upserted by email or customer number; invalid rows "
                        "are skipped and listed with their line. Columns are mapped by the "
                        "optional 'mapping' (CSV column → contact field) or else by common "
                        "German and English headers (E-Mail, Vorname, Anrede, …). A file that "
                        "cannot be read or mapped is a 422 with code invalid_file; nothing is "
                        "imported then. An import never records consent by itself: only with a "
                        "proof reference for the whole file (consent_topics, consent_source, "
                        "consent_date, consent_text) and then only for the rows whose column "
                        "mapped to 'consent' says yes (ja/yes/1/x/true; nein/no/0/empty is no), "
                        "or for every row with consent_all_rows. Each becomes an 'imported' "
                        "ledger entry per topic with the proof as evidence; topics already given "
                        "are skipped, and a withdrawal on or after the proof date is never "
                        "overridden (a note, not an error). A column mapped to 'consent' without "
                        "a proof is a 422 invalid_file; a proof that is no proof (unknown or "
                        "tracking topic, date in the future, missing source or text) a 422 "
                        "invalid_consent_proof whose details name the field."
                    ),
                    requestBody={
                        "required": True,
                        "content": {
                            "multipart/form-data": {
                                "schema": {
                                    "type": "object",
                                    "required": ["file"],
                                    "properties": {
                                        "file": {"type": "string", "format": "binary"},
                                        "mapping": {
                                            "type": "string",
                                            "description": 'JSON object, e.g. {"E-Mail": "email"}',
                                        },
                                        "consent_topics": {
                                            "type": "string",
                                            "description": "Comma list of marketing topic slugs",
                                        },
                                        "consent_source": {
                                            "type": "string",
                                            "description": "Where the consent was collected",
                                        },
                                        "consent_date": {
                                            "type": "string",
                                            "description": "When: YYYY-MM-DD or DD.MM.YYYY",
                                        },
                                        "consent_text": {
                                            "type": "string",
                                            "description": "The wording agreed to, verbatim",
                                        },
                                        "consent_language": {
                                            "type": "string",
                                            "enum": ["de", "en"],
                                            "default": "de",
                                        },
                                        "consent_all_rows": {
                                            "type": "string",
                                            "description": "true: every row consented",
                                        },
                                    },
                                }
                            },
                            "text/csv": {"schema": {"type": "string"}},
                        },
                    },
                )
            },
            "/events": {
                "post": _op(
                    "Record business events (order, complaint, cancellation, expected_revenue, "
                    'call, meeting, note): one object or {"events": [...]}, all or nothing; '
                    "an item with an id seen before is skipped",
                    {
                        "200": {"description": "Only duplicates", "content": _json("Recorded")},
                        "201": {"description": "Recorded", "content": _json("Recorded")},
                        "400": ERROR,
                        "403": ERROR,
                        "415": ERROR,
                        "422": ERROR,
                    },
                    requestBody={"required": True, "content": _json("ActivityInput")},
                )
            },
            "/events/import": {
                "post": _op(
                    "Record business events from a CSV file (UTF-8 or Windows-1252, ';' or ',')",
                    {
                        "200": {"description": "The report", "content": _json("ImportReport")},
                        "400": ERROR,
                        "403": ERROR,
                        "413": ERROR,
                        "415": ERROR,
                        "422": ERROR,
                    },
                    description=(
                        "One event per row, on the contact named by customer_number or email "
                        "(never created here). Columns: type (also German: Bestellung, "
                        "Beschwerde, Kündigung, …), occurred_at (ISO 8601 or DD.MM.YYYY HH:MM; "
                        "without an offset Europe/Berlin), id, and the type's fields; amounts "
                        "may use a decimal comma. Invalid rows are skipped and listed with "
                        "their line. In the report, created counts events recorded now and "
                        "unchanged rows recorded before (same id, or the same cells when there "
                        "is no id), so a re-sent file records nothing new. Mapping and the "
                        "invalid_file 422 as for /contacts/import."
                    ),
                    requestBody={
                        "required": True,
                        "content": {
                            "multipart/form-data": {
                                "schema": {
                                    "type": "object",
                                    "required": ["file"],
                                    "properties": {
                                        "file": {"type": "string", "format": "binary"},
                                        "mapping": {
                                            "type": "string",
                                            "description": 'JSON object, e.g. {"Betrag": "amount"}',
                                        },
                                    },
                                }
                            },
                            "text/csv": {"schema": {"type": "string"}},
                        },
                    },
                )
            },
            "/contacts/{contact_id}/timeline": {
                "get": _op(
                    "The contact's events, newest first",
                    {
                        "200": {"description": "A page", "content": _json("Timeline")},
                        "400": ERROR,
                        "404": ERROR,
                    },
                    parameters=[
                        contact_id,
                        _query("type", "string", "comma-separated event types"),
                        _query("before", "integer", "id of the last event of the previous page"),
                        _query("limit", "integer", "1 to 500, default 50"),
                    ],
                )
            },
            "/custom-fields": {
                "get": _op(
                    "The custom fields a contact's 'custom' object accepts, in display order",
                    {"200": {"description": "Fields", "content": _json("CustomFieldList")}},
                ),
                "post": _op(
                    "Define a custom field (admins only); its key and type never change",
                    {
                        "201": {"description": "Created", "content": _json("CustomField")},
                        "400": ERROR,
                        "403": ERROR,
                        "415": ERROR,
                        "422": ERROR,
                    },
                    requestBody={"required": True, "content": _json("CustomFieldInput")},
                ),
            },
            **_segment_paths(),
            **_subscription_paths(),
            **_unsubscribe_paths(contact_id),
            **_consent_admin_paths(contact_id),
            "/tokens/{token_id}": {
                "delete": _op(
                    "Revoke one of the caller's tokens",
                    {"204": {"description": "Revoked"}, "404": ERROR},
                    parameters=[token_id],
                )
            },
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "responses": {
                "Error": {"description": "An error", "content": _json("Error")},
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["code", "message", "details"],
                            "properties": {
                                "code": {"type": "string"},
                                "message": {"type": "string"},
                                "details": {"type": "object"},
                            },
                        }
                    },
                },
                "User": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "integer"},
                        "email": {"type": "string", "format": "email"},
                        "name": {"type": "string"},
                        "role": {"type": "string", "enum": ["admin", "marketer", "sales"]},
                        "active": {"type": "boolean"},
                    },
                },
                "Token": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "integer"},
                        "name": {"type": "string"},
                        "prefix": {"type": "string"},
                        "created_at": {"type": "string", "format": "date-time"},
                        "last_used_at": {"type": ["string", "null"], "format": "date-time"},
                        "revoked_at": {"type": ["string", "null"], "format": "date-time"},
                    },
                },
                "TokenList": {
                    "type": "object",
                    "properties": {
                        "items": {"type": "array", "items": {"$ref": "#/components/schemas/Token"}}
                    },
                },
                "TokenCreate": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {"name": {"type": "string", "minLength": 1, "maxLength": 100}},
                },
                "ContactInput": {
                    "type": "object",
                    "description": "Writable fields; unknown fields are refused (422).",
                    "properties": {
                        **{name: {"type": "string"} for name in CONTACT_TEXT},
                        "gender": {
                            "type": "string",
                            "enum": ["female", "male", "diverse", "unknown"],
                            "description": "Herr/Frau/divers are accepted too",
                        },
                        "formality": {
                            "type": "string",
                            "enum": ["formal", "informal"],
                            "description": "Sie/Du are accepted too",
                        },
                        "language": {"type": "string", "enum": ["de", "en"]},
                        "time_zone": {"type": ["string", "null"], "example": "Europe/Berlin"},
                        "birthday": {"type": ["string", "null"], "format": "date"},
                        "tags": {"type": "array", "items": {"type": "string"}},
                        "custom": {
                            "type": "object",
                            "description": (
                                "Values of the custom fields, by key (GET /custom-fields lists "
                                "them); any other key is refused (422, custom.<key>). text: a "
                                "string of up to 500 characters; number: a JSON number or a "
                                "string like 1.234,5 or 1,234.5, stored as a number; date: "
                                "YYYY-MM-DD or DD.MM.YYYY, stored as YYYY-MM-DD; choice: one of "
                                "the field's choices in any case, stored as defined. null "
                                "removes a value; keys not sent stay as they are."
                            ),
                            "additionalProperties": {
                                "type": ["string", "number", "null"],
                            },
                        },
                        "owner_id": {"type": ["integer", "null"]},
                        "lifecycle": {"type": "string", "enum": LIFECYCLES},
                    },
                },
                "Contact": {
                    "allOf": [
                        {"$ref": "#/components/schemas/ContactInput"},
                        {
                            "type": "object",
                            "properties": {
                                "id": {"type": "integer"},
                                "created_at": {"type": "string", "format": "date-time"},
                                "updated_at": {"type": "string", "format": "date-time"},
                            },
                        },
                    ]
                },
                "ContactList": {
                    "type": "object",
                    "properties": {
                        "items": {
                            "type": "array",
                            "items": {"$ref": "#/components/schemas/Contact"},
                        },
                        "next_after": {"type": ["integer", "null"]},
                    },
                },
                "ImportReport": {
                    "type": "object",
                    "properties": {
                        "rows": {"type": "integer", "description": "data rows read, errors too"},
                        "created": {"type": "integer"},
                        "updated": {"type": "integer"},
                        "unchanged": {"type": "integer"},
                        "ignored_columns": {"type": "array", "items": {"type": "string"}},
                        "errors": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "line": {"type": "integer", "description": "header = 1"},
                                    "field": {"type": ["string", "null"]},
                                    "message": {"type": "string"},
                                },
                            },
                        },
                        "consents_imported": {
                            "type": "integer",
                            "description": "contacts import: (contact, topic) pairs recorded",
                        },
                        "consents_skipped": {
                            "type": "integer",
                            "description": "already given, or withdrawn since the proof date",
                        },
                        "notes": {
                            "type": "array",
                            "description": "contacts import: rows whose consent was not imported",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "line": {"type": "integer"},
                                    "message": {"type": "string"},
                                },
                            },
                        },
                    },
                },
                "ActivityInput": {
                    "type": "object",
                    "required": ["type"],
                    "properties": {
                        "type": {
                            "type": "string",
                            "enum": [
                                "order",
                                "complaint",
                                "cancellation",
                                "expected_revenue",
                                "call",
                                "meeting",
                                "note",
                            ],
                        },
                        "id": {"type": "string", "description": "your id; makes resending safe"},
                        "contact_id": {"type": "integer"},
                        "email": {"type": "string", "format": "email"},
                        "occurred_at": {"type": "string", "format": "date-time"},
                        "amount": {"type": "string", "example": "19.90"},
                        "currency": {"type": "string", "example": "EUR"},
                        "order_id": {"type": "string"},
                        "reason": {"type": "string"},
                        "severity": {"type": "string", "enum": ["low", "medium", "high"]},
                        "product": {"type": "string"},
                        "period": {"type": "string", "example": "2026-Q3"},
                        "text": {"type": "string"},
                        "by": {
                            "type": "string",
                            "description": "call, meeting, note: who called, met or wrote",
                        },
                        "events": {"type": "array", "items": {"type": "object"}},
                    },
                },
                "Recorded": {
                    "type": "object",
                    "properties": {
                        "recorded": {"type": "integer"},
                        "duplicates": {"type": "integer"},
                        "ids": {"type": "array", "items": {"type": ["integer", "null"]}},
                    },
                },
                "Timeline": {
                    "type": "object",
                    "properties": {
                        "items": {"type": "array", "items": {"type": "object"}},
                        "next_before": {"type": ["integer", "null"]},
                    },
                },
                "CustomFieldInput": {
                    "type": "object",
                    "required": ["key", "label", "type"],
                    "properties": {
                        "key": {
                            "type": "string",
                            "pattern": "^[a-z][a-z0-9_]{0,39}$",
                            "description": "what the API, templates and imports use",
                        },
                        "label": {"type": "string", "minLength": 1, "maxLength": 100},
                        "type": {"type": "string", "enum": ["text", "number", "date", "choice"]},
                        "choices": {
                            "type": "array",
                            "items": {"type": "string", "maxLength": 100},
                            "maxItems": 100,
                            "description": "required for type choice, ignored otherwise",
                        },
                    },
                },
                "CustomField": {
                    "allOf": [
                        {"$ref": "#/components/schemas/CustomFieldInput"},
                        {
                            "type": "object",
                            "properties": {
                                "id": {"type": "integer"},
                                "created_at": {"type": "string", "format": "date-time"},
                            },
                        },
                    ]
                },
                "CustomFieldList": {
                    "type": "object",
                    "properties": {
                        "items": {
                            "type": "array",
                            "items": {"$ref": "#/components/schemas/CustomField"},
                        }
                    },
                },
                **_segment_schemas(),
                **_subscription_schemas(),
                **_unsubscribe_schemas(),
                **_consent_admin_schemas(),
                "NewToken": {
                    "allOf": [
                        {"$ref": "#/components/schemas/Token"},
                        {"type": "object", "properties": {"token": {"type": "string"}}},
                    ]
                },
            },
        },
    }


# -- segments (nurture/contacts/segments_api.py) -------------------------------------------------

SEGMENT_DEFINITION_DOC = (
    'A saved filter as JSON: {"match": "all"|"any", "conditions": [...]}. A '
    'condition is a field condition {"field", "op", "value"}, an event condition '
    '{"event", "op", "days", "count"} or one level of group {"any": [...]} / '
    '{"all": [...]}. Fields and their operators: text (email, first_name, last_name, title, '
    "company, industry, company_size, city, country, phone, mobile, website, linkedin, xing, "
    "source, customer_number, time_zone and custom text fields): eq, neq, contains, "
    "starts_with, is_empty, is_not_empty (case-insensitive); enum (lifecycle, gender, "
    "formality, language, custom choice fields): eq, in (a list); date (birthday, custom date "
    "fields) and datetime (created_at, updated_at): before, after (YYYY-MM-DD), within_days, "
    "more_than_days_ago (a number of days); number (custom number fields): eq, gt, gte, lt, "
    "lte; tags: has, has_not; owner_id: eq (a user id), is_empty. Custom fields are named "
    "custom.<key>. Event types: order, complaint, cancellation, expected_revenue, call, "
    "meeting, note, sent, bounced, opened, clicked, replied, contact_created; operators "
    "within_days (days), none_within_days (days), at_least (count, days), never. A consent "
    'condition {"consent": "<topic slug>", "op"} reads the current consent for a topic: '
    "confirmed, existing_customer, any_basis (confirmed, or existing customer for a topic of "
    "the sender's own similar products), none (no such basis), pending; it does not check the "
    "suppression list, which the send gate still applies. Days 1-3650, "
    "counts 1-1000, at most 50 conditions, strings of 200 characters, lists of 100 values; "
    "unknown keys are refused. Errors (422) name each problem by its path, e.g. "
    "conditions.2.value."
)


def _segment_paths() -> dict[str, Any]:
    segment_id = {
        "name": "segment_id",
        "in": "path",
        "required": True,
        "schema": {"type": "integer"},
    }
    return {
        "/segments": {
            "get": _op(
                "List segments by name; ?count=1 adds how many contacts match each now",
                {"200": {"description": "Segments", "content": _json("SegmentList")}},
                parameters=[_query("count", "integer", "1 to count the contacts of every segment")],
            ),
            "post": _op(
                "Create a segment",
                {
                    "201": {"description": "Created", "content": _json("Segment")},
                    "400": ERROR,
                    "403": ERROR,
                    "415": ERROR,
                    "422": ERROR,
                },
                description=SEGMENT_DEFINITION_DOC,
                requestBody={"required": True, "content": _json("SegmentInput")},
            ),
        },
        "/segments/{segment_id}": {
            "get": _op(
                "One segment with how many contacts match it now",
                {"200": {"description": "The segment", "content": _json("Segment")}, "404": ERROR},
                parameters=[segment_id],
            ),
            "put": _op(
                "Replace a segment's name and definition",
                {
                    "200": {"description": "Changed", "content": _json("Segment")},
                    "400": ERROR,
                    "403": ERROR,
                    "404": ERROR,
                    "415": ERROR,
                    "422": ERROR,
                },
                parameters=[segment_id],
                description=SEGMENT_DEFINITION_DOC,
                requestBody={"required": True, "content": _json("SegmentInput")},
            ),
            "delete": _op(
                "Delete a segment (its contacts stay)",
                {"204": {"description": "Deleted"}, "403": ERROR, "404": ERROR},
                parameters=[segment_id],
            ),
        },
        "/segments/{segment_id}/contacts": {
            "get": _op(
                "The contacts matching the segment now, by id (keyset paging)",
                {
                    "200": {"description": "A page", "content": _json("SegmentContacts")},
                    "400": ERROR,
                    "404": ERROR,
                    "409": ERROR,
                },
                description=(
                    "409 segment_invalid: the stored definition names something that no longer "
                    "exists (e.g. a deleted custom field); details name the paths."
                ),
                parameters=[
                    segment_id,
                    _query("after", "integer", "id of the last contact of the previous page"),
                    _query("limit", "integer", "1 to 1000, default 100"),
                ],
            )
        },
    }


def _segment_schemas() -> dict[str, Any]:
    definition = {
        "type": "object",
        "description": SEGMENT_DEFINITION_DOC,
        "required": ["conditions"],
        "additionalProperties": False,
        "properties": {
            "match": {"type": "string", "enum": ["all", "any"], "default": "all"},
            "conditions": {"type": "array", "maxItems": 50, "items": {"type": "object"}},
        },
        "example": {
            "match": "all",
            "conditions": [
                {"field": "lifecycle", "op": "in", "value": ["customer", "at_risk"]},
                {"event": "order", "op": "none_within_days", "days": 180},
                {"any": [{"field": "tags", "op": "has", "value": "vip"}]},
            ],
        },
    }
    return {
        "SegmentDefinition": definition,
        "SegmentInput": {
            "type": "object",
            "required": ["name", "definition"],
            "additionalProperties": False,
            "properties": {
                "name": {"type": "string", "minLength": 1, "maxLength": 100},
                "definition": {"$ref": "#/components/schemas/SegmentDefinition"},
            },
        },
        "Segment": {
            "type": "object",
            "properties": {
                "id": {"type": "integer"},
                "name": {"type": "string"},
                "definition": {"$ref": "#/components/schemas/SegmentDefinition"},
                "created_by_id": {"type": ["integer", "null"]},
                "created_at": {"type": "string", "format": "date-time"},
                "updated_at": {"type": "string", "format": "date-time"},
                "count": {
                    "type": ["integer", "null"],
                    "description": "matching contacts now; null when the definition is stale",
                },
                "errors": {
                    "type": "object",
                    "description": "only for a stale definition: what no longer validates",
                },
            },
        },
        "SegmentList": {
            "type": "object",
            "properties": {
                "items": {"type": "array", "items": {"$ref": "#/components/schemas/Segment"}}
            },
        },
        "SegmentContacts": {
            "type": "object",
            "properties": {
                "items": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "id": {"type": "integer"},
                            "email": {"type": "string", "format": "email"},
                        },
                    },
                },
                "next_after": {"type": ["integer", "null"]},
            },
        },
    }


# -- unsubscribe (nurture/consent/api_unsubscribe.py) --------------------------------------------


def _unsubscribe_paths(contact_id: dict[str, Any]) -> dict[str, Any]:
    return {
        "/contacts/{contact_id}/unsubscribe": {
            "post": _op(
                "Unsubscribe a contact from everything (an objection passed on by your systems)",
                {
                    "200": {"description": "Unsubscribed", "content": _json("Unsubscribed")},
                    "400": ERROR,
                    "403": ERROR,
                    "404": ERROR,
                    "415": ERROR,
                    "422": ERROR,
                },
                description=(
                    "Withdraws every consent of the contact (marketing topics and tracking; the "
                    "existing-customer basis is recorded as an objection, which ends it for "
                    "good) and puts the address on the suppression list, effective before the "
                    "next send. Idempotent: a repeat answers 200 with changed false and records "
                    "nothing. The body is optional. Admins and marketers only."
                ),
                parameters=[contact_id],
                requestBody={"required": False, "content": _json("UnsubscribeInput")},
            )
        }
    }


def _unsubscribe_schemas() -> dict[str, Any]:
    return {
        "UnsubscribeInput": {
            "type": "object",
            "properties": {
                "reason": {
                    "type": "string",
                    "maxLength": 500,
                    "description": "why the person left, as they said it (optional)",
                }
            },
        },
        "Unsubscribed": {
            "type": "object",
            "properties": {
                "contact_id": {"type": "integer"},
                "suppressed": {"type": "boolean", "const": True},
                "changed": {
                    "type": "boolean",
                    "description": "false when the contact was unsubscribed already",
                },
                "withdrawn": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "slugs of the topics ended by this call",
                },
                "consents": {
                    "type": "object",
                    "description": "current state per topic slug",
                    "additionalProperties": {
                        "type": "object",
                        "properties": {
                            "state": {
                                "type": "string",
                                "enum": [
                                    "pending",
                                    "granted",
                                    "existing_customer",
                                    "none",
                                    "objected",
                                ],
                            },
                            "since": {"type": "string", "format": "date-time"},
                        },
                    },
                },
            },
        },
    }


# -- double opt-in (nurture/consent/api_subscriptions.py) ----------------------------------------

SIGNUP_CONTACT_FIELDS = (
    "first_name",
    "last_name",
    "title",
    "company",
    "city",
    "country",
    "phone",
    "mobile",
    "website",
)


def _subscription_paths() -> dict[str, Any]:
    return {
        "/subscriptions": {
            "post": _op(
                "Sign a person up by double opt-in: the confirmation mail goes out at once, and "
                "consent exists only once they press the button on the page its link opens",
                {
                    "202": {
                        "description": (
                            "Accepted. status pending: a confirmation is waiting (request_id; "
                            "null if none could be named); already_confirmed: every topic is "
                            "granted, no mail was sent"
                        ),
                        "content": _json("Subscription"),
                    },
                    "400": ERROR,
                    "403": ERROR,
                    "409": ERROR,
                    "415": ERROR,
                    "422": ERROR,
                    "429": {
                        "description": "Too many sign-ups from this ip; see Retry-After",
                        "headers": {"Retry-After": {"schema": {"type": "integer"}}},
                        "content": _json("Error"),
                    },
                },
                requestBody={"required": True, "content": _json("SubscriptionInput")},
            )
        }
    }


def _subscription_schemas() -> dict[str, Any]:
    return {
        "SubscriptionInput": {
            "type": "object",
            "required": ["email", "topics", "consent_text"],
            "description": (
                "Contact fields only fill gaps of an existing contact, never overwrite. A "
                "suppressed address is refused (409). Unknown fields are refused (422)."
            ),
            "properties": {
                "email": {"type": "string", "format": "email"},
                **{name: {"type": "string"} for name in SIGNUP_CONTACT_FIELDS},
                "gender": {"type": "string", "enum": ["female", "male", "diverse", "unknown"]},
                "formality": {"type": "string", "enum": ["formal", "informal"]},
                "language": {
                    "type": "string",
                    "enum": ["de", "en"],
                    "description": "of the consent text and the confirmation mail; default de",
                },
                "topics": {
                    "type": "array",
                    "items": {"type": "string"},
                    "minItems": 1,
                    "description": "topic slugs (GET /topics)",
                },
                "consent_text": {
                    "type": "string",
                    "description": "the exact wording the person saw; stored with its hash",
                },
                "source": {
                    "type": "string",
                    "maxLength": 100,
                    "description": "where on your site, e.g. footer-newsletter",
                },
                "ip": {"type": "string", "description": "the subscriber's IPv4 or IPv6 address"},
                "user_agent": {"type": "string", "description": "the subscriber's browser"},
                "tracking": {
                    "type": "boolean",
                    "description": "the person also agreed to open and click tracking",
                },
            },
        },
        "Subscription": {
            "type": "object",
            "properties": {
                "request_id": {"type": ["integer", "null"]},
                "status": {"type": "string", "enum": ["pending", "already_confirmed"]},
            },
        },
    }


# -- topics, consents, suppressions, export, erasure (nurture/consent/api_consents.py) ------------


def _erase_op(contact_id: dict[str, Any]) -> dict[str, Any]:
    return _op(
        "Erase a contact (GDPR Art. 17; admins only)",
        {
            "200": {"description": "Erased", "content": _json("Erasure")},
            "403": ERROR,
            "404": ERROR,
        },
        description=(
            "Puts the address on the suppression list (reason erased, as a keyed hash, so it is "
            "never mailed, imported or subscribed again), records an erased entry per topic in "
            "the consent ledger, blanks the ledger's IP, user agent, source details and "
            "evidence, empties the payloads of the contact's events (the rows stay, anonymous), "
            "cancels unsent mail and replaces address, name, subject and context of the "
            "contact's outbox rows, deletes pending opt-in requests, then the contact. The "
            "erasure is logged as a contact_erased event with the contact id and the user."
        ),
        parameters=[contact_id],
    )


def _consent_admin_paths(contact_id: dict[str, Any]) -> dict[str, Any]:
    return {
        "/topics": {
            "get": _op(
                "The topics a contact can consent to (marketing first, then tracking)",
                {"200": {"description": "Topics", "content": _json("TopicList")}},
            ),
            "post": _op(
                "Create a topic (admins only); its slug never changes",
                {
                    "201": {"description": "Created", "content": _json("Topic")},
                    "400": ERROR,
                    "403": ERROR,
                    "415": ERROR,
                    "422": ERROR,
                },
                requestBody={"required": True, "content": _json("TopicInput")},
            ),
        },
        "/contacts/{contact_id}/consents": {
            "get": _op(
                "The contact's consent ledger (oldest first) and current state per topic",
                {
                    "200": {"description": "Ledger and states", "content": _json("Consents")},
                    "404": ERROR,
                },
                parameters=[contact_id],
            )
        },
        "/contacts/{contact_id}/export": {
            "get": _op(
                "Everything stored about the contact (GDPR Art. 15/20; admins and marketers)",
                {
                    "200": {"description": "The export", "content": _json("ContactExport")},
                    "403": ERROR,
                    "404": ERROR,
                },
                parameters=[contact_id],
            )
        },
        "/suppressions": {
            "get": _op(
                "The suppression list: keyed hashes and reasons, never addresses (keyset paging)",
                {
                    "200": {"description": "A page", "content": _json("SuppressionList")},
                    "400": ERROR,
                    "403": ERROR,
                },
                description=(
                    "address_hash is HMAC-SHA256 of the normalised address under a secret kept "
                    "outside the database. Admins and marketers only."
                ),
                parameters=[
                    _query(
                        "reason", "string", "unsubscribed, hard_bounce, complaint, manual, erased"
                    ),
                    _query("after", "integer", "id of the last entry of the previous page"),
                    _query("limit", "integer", "1 to 1000, default 100"),
                ],
            )
        },
    }


def _consent_admin_schemas() -> dict[str, Any]:
    when = {"type": "string", "format": "date-time"}
    nullable_when = {"type": ["string", "null"], "format": "date-time"}
    nullable_text = {"type": ["string", "null"]}
    states = {
        "type": "object",
        "description": "per topic slug; topics the contact never had are left out",
        "additionalProperties": {
            "type": "object",
            "properties": {
                "state": {
                    "type": "string",
                    "enum": ["pending", "granted", "existing_customer", "none", "objected"],
                },
                "since": when,
                "granted_at": nullable_when,
            },
        },
    }
    entry = {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "topic": {"type": "string", "description": "the topic's slug"},
            "action": {
                "type": "string",
                "enum": [
                    "requested",
                    "confirmed",
                    "reconfirmed",
                    "imported",
                    "existing_customer",
                    "withdrawn",
                    "objected",
                    "expired",
                    "erased",
                ],
            },
            "at": {**when, "description": "UTC, to the second"},
            "source": {"type": "string"},
            "ip": nullable_text,
            "user_agent": nullable_text,
            "text_hash": {
                "type": ["string", "null"],
                "description": "SHA-256 of the exact consent text shown",
            },
            "request_id": {"type": ["integer", "null"]},
            "mail_message_id": {
                "type": ["string", "null"],
                "description": "Message-ID header of the confirmation mail",
            },
            "evidence": {"type": "object"},
        },
    }
    return {
        "TopicInput": {
            "type": "object",
            "required": ["name", "slug"],
            "properties": {
                "name": {"type": "string", "minLength": 1, "maxLength": 100},
                "slug": {"type": "string", "pattern": "^[a-z][a-z0-9-]{0,63}$"},
                "kind": {
                    "type": "string",
                    "enum": ["marketing", "tracking"],
                    "default": "marketing",
                },
                "own_similar_products": {
                    "type": "boolean",
                    "default": False,
                    "description": "the existing-customer exception (§7(3) UWG) may apply",
                },
                "description": {"type": "string", "maxLength": 2000},
            },
        },
        "Topic": {
            "allOf": [
                {"$ref": "#/components/schemas/TopicInput"},
                {
                    "type": "object",
                    "properties": {"id": {"type": "integer"}, "created_at": when},
                },
            ]
        },
        "TopicList": {
            "type": "object",
            "properties": {
                "items": {"type": "array", "items": {"$ref": "#/components/schemas/Topic"}}
            },
        },
        "ConsentEntry": entry,
        "Consents": {
            "type": "object",
            "properties": {
                "contact_id": {"type": "integer"},
                "ledger": {"type": "array", "items": {"$ref": "#/components/schemas/ConsentEntry"}},
                "current": states,
            },
        },
        "SuppressionList": {
            "type": "object",
            "properties": {
                "items": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "id": {"type": "integer"},
                            "address_hash": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                            "reason": {
                                "type": "string",
                                "enum": [
                                    "unsubscribed",
                                    "hard_bounce",
                                    "complaint",
                                    "manual",
                                    "erased",
                                ],
                            },
                            "created_at": when,
                        },
                    },
                },
                "next_after": {"type": ["integer", "null"]},
            },
        },
        "ContactExport": {
            "type": "object",
            "description": (
                "format nurture.contact-export/1: contact (every field), custom_fields (key → "
                "label and value), consent (ledger with the exact texts, current states), events "
                "(with payloads), messages (to, subject, state, times, Message-ID), suppression"
            ),
            "properties": {
                "format": {"type": "string"},
                "exported_at": when,
                "contact": {"type": "object"},
                "custom_fields": {"type": "object"},
                "consent": {
                    "type": "object",
                    "properties": {
                        "ledger": {
                            "type": "array",
                            "items": {
                                "allOf": [
                                    {"$ref": "#/components/schemas/ConsentEntry"},
                                    {
                                        "type": "object",
                                        "properties": {"text": {"type": ["object", "null"]}},
                                    },
                                ]
                            },
                        },
                        "current": states,
                    },
                },
                "events": {"type": "array", "items": {"type": "object"}},
                "messages": {"type": "array", "items": {"type": "object"}},
                "suppression": {
                    "type": "object",
                    "properties": {
                        "suppressed": {"type": "boolean"},
                        "reason": nullable_text,
                        "since": nullable_when,
                    },
                },
            },
        },
        "Erasure": {
            "type": "object",
            "properties": {
                "contact_id": {"type": "integer"},
                "erased_at": when,
                "suppressed": {"type": "boolean", "const": True},
                "ledger_entries_blanked": {"type": "integer"},
                "erasure_entries": {"type": "integer"},
                "events_emptied": {"type": "integer"},
                "messages_anonymised": {"type": "integer"},
            },
        },
    }
