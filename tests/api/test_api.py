from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from nurture.auth.models import ApiToken, Role
from nurture.auth.tokens import create_token
from nurture.clock import FrozenClock
from tests.factories import make_user


def _token(session: Session, clock: FrozenClock, role: Role = Role.MARKETER) -> str:
    user = make_user(session, clock, role=role)
    _row, raw = create_token(session, user, "crm sync", now=clock.now())
    session.commit()
    return raw


def _auth(raw: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {raw}"}


def test_me_answers_with_the_tokens_user(client: FlaskClient, session: Session, clock) -> None:
    raw = _token(session, clock, Role.SALES)
    response = client.get("/api/v1/me", headers=_auth(raw))
    assert response.status_code == 200
    assert response.json is not None
    assert response.json["role"] == "sales"
    assert response.json["email"].endswith("@nurture.example")


def test_use_records_last_used_time(client: FlaskClient, session: Session, clock) -> None:
    raw = _token(session, clock)
    clock.advance(hours=2)
    assert client.get("/api/v1/me", headers=_auth(raw)).status_code == 200
    session.expire_all()
    token = session.scalars(select(ApiToken)).one()
    assert token.last_used_at == clock.now()


def test_missing_token_is_a_json_401(client: FlaskClient) -> None:
    response = client.get("/api/v1/me")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert response.json == {
        "error": {
            "code": "unauthorized",
            "message": "Send an API token as 'Authorization: Bearer <token>'.",
            "details": {},
        }
    }


def test_unknown_token_is_refused(client: FlaskClient) -> None:
    response = client.get("/api/v1/me", headers=_auth("nrt_made-up-token"))
    assert response.status_code == 401
    assert response.json["error"]["code"] == "invalid_token"  # type: ignore[index]


def test_revoked_token_stops_working(client: FlaskClient, session: Session, clock) -> None:
    raw = _token(session, clock)
    token_id = session.scalars(select(ApiToken.id)).one()
    assert client.delete(f"/api/v1/tokens/{token_id}", headers=_auth(raw)).status_code == 204
    response = client.get("/api/v1/me", headers=_auth(raw))
    assert response.status_code == 401
    assert response.json["error"]["code"] == "invalid_token"  # type: ignore[index]


def test_token_of_a_deactivated_user_is_refused(
    client: FlaskClient, session: Session, clock
) -> None:
    raw = _token(session, clock)
    user = session.scalars(select(ApiToken)).one().user
    user.active = False
    session.commit()
    assert client.get("/api/v1/me", headers=_auth(raw)).status_code == 401


def test_create_token_shows_the_secret_once(client: FlaskClient, session: Session, clock) -> None:
    raw = _token(session, clock)
    created = client.post("/api/v1/tokens", json={"name": "website"}, headers=_auth(raw))
    assert created.status_code == 201
    body = created.json
    assert body is not None and body["token"].startswith("nrt_")
    listing = client.get("/api/v1/tokens", headers=_auth(raw)).json
    assert listing is not None
    assert {t["name"] for t in listing["items"]} == {"crm sync", "website"}
    assert all("token" not in t for t in listing["items"])
    # The new secret works on its own.
    assert client.get("/api/v1/me", headers=_auth(body["token"])).status_code == 200


def test_malformed_json_is_a_400_with_a_json_error(client: FlaskClient, session, clock) -> None:
    raw = _token(session, clock)
    response = client.post(
        "/api/v1/tokens",
        data='{"name": "broken",',
        headers=_auth(raw) | {"Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json == {
        "error": {
            "code": "invalid_json",
            "message": "The request body is not valid JSON.",
            "details": {},
        }
    }


def test_json_that_is_not_an_object_is_refused(client: FlaskClient, session, clock) -> None:
    raw = _token(session, clock)
    response = client.post("/api/v1/tokens", json=["website"], headers=_auth(raw))
    assert response.status_code == 400
    assert response.json["error"]["message"] == "The request body must be a JSON object."  # type: ignore[index]


def test_wrong_content_type_is_a_415(client: FlaskClient, session, clock) -> None:
    raw = _token(session, clock)
    response = client.post("/api/v1/tokens", data="name=website", headers=_auth(raw))
    assert response.status_code == 415
    assert response.json["error"]["code"] == "unsupported_media_type"  # type: ignore[index]


def test_invalid_field_is_a_422_naming_the_field(client: FlaskClient, session, clock) -> None:
    raw = _token(session, clock)
    response = client.post("/api/v1/tokens", json={"name": ""}, headers=_auth(raw))
    assert response.status_code == 422
    assert response.json["error"]["details"] == {  # type: ignore[index]
        "name": "A token needs a name of 1 to 100 characters."
    }


def test_unknown_api_route_and_wrong_method_answer_in_json(client: FlaskClient) -> None:
    missing = client.get("/api/v1/does-not-exist")
    assert missing.status_code == 404
    assert missing.json["error"]["code"] == "not_found"  # type: ignore[index]
    wrong = client.put("/api/v1/me")
    assert wrong.status_code == 405
    assert wrong.json["error"]["code"] == "method_not_allowed"  # type: ignore[index]
    assert "GET" in wrong.headers["Allow"]


def test_oversized_request_is_a_413(app: Flask, client: FlaskClient, session, clock) -> None:
    raw = _token(session, clock)
    app.config["MAX_CONTENT_LENGTH"] = 1024
    response = client.post("/api/v1/tokens", json={"name": "x" * 5000}, headers=_auth(raw))
    assert response.status_code == 413
    assert response.json["error"]["code"] == "request_entity_too_large"  # type: ignore[index]


def test_foreign_token_cannot_be_revoked(client: FlaskClient, session, clock) -> None:
    mine = _token(session, clock)
    _token(session, clock)
    other_id = max(session.scalars(select(ApiToken.id)))
    response = client.delete(f"/api/v1/tokens/{other_id}", headers=_auth(mine))
    assert response.status_code == 404
    session.expire_all()
    assert session.get(ApiToken, other_id).revoked_at is None  # type: ignore[union-attr]


def test_openapi_document_covers_every_api_route(app: Flask, client: FlaskClient) -> None:
    spec = client.get("/api/v1/openapi.json").json
    assert spec is not None and spec["openapi"].startswith("3.")
    documented = {
        (path, method.upper())
        for path, operations in spec["paths"].items()
        for method in operations
    }
    routed = set()
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1/"):
            continue
        path = rule.rule.removeprefix("/api/v1")
        path = path.replace("<int:", "{").replace("<", "{").replace(">", "}")
        for method in rule.methods - {"HEAD", "OPTIONS"}:  # type: ignore[operator]
            routed.add((path, method))
    assert routed == documented
