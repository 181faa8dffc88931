"""The OpenAPI 3.1 document of /api/v1. A test keeps it and the routes in step."""

from __future__ import annotations

from typing import Any

ERROR = {"$ref": "#/components/responses/Error"}


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
                "NewToken": {
                    "allOf": [
                        {"$ref": "#/components/schemas/Token"},
                        {"type": "object", "properties": {"token": {"type": "string"}}},
                    ]
                },
            },
        },
    }
