from sqlalchemy.orm import Session

from nurture.clock import FrozenClock
from nurture.contacts.context import template_context
from nurture.contacts.custom_fields import create_field
from nurture.mail.render import TemplateSource, compile_template, sample_context
from tests.factories import make_contact


def test_a_contacts_mail_greets_correctly_in_its_language(session: Session, clock) -> None:  # type: ignore[no-untyped-def]
    anna = make_contact(
        session,
        clock,
        first_name="Anna",
        last_name="MÜLLER",
        gender="Frau",
        title="dr",
        language="de",
    )
    tom = make_contact(
        session,
        clock,
        first_name="Tom",
        last_name="Smith",
        gender="male",
        language="en",
        formality="informal",
    )
    alex = make_contact(session, clock, first_name="Alex", last_name="Schmidt")
    compiled = compile_template(TemplateSource(subject="Hallo", html="<p>{{ salutation }},</p>"))
    greetings = []
    for contact in (anna, tom, alex):
        context = sample_context(lang=contact.language) | template_context(contact)
        text = compiled.render(context).text
        greetings.append(next(line for line in text.splitlines() if line.endswith(",")))
    assert greetings == ["Sehr geehrte Frau Dr. Müller,", "Hi Tom,", "Guten Tag Alex Schmidt,"]


def test_context_is_plain_data(session: Session, clock: FrozenClock) -> None:
    import json

    for key, kind, choices in (("plan", "choice", ["Pro", "Basic"]), ("seats", "number", [])):
        create_field(session, key=key, label=key, kind=kind, choices=choices, now=clock.now())
    contact = make_contact(
        session, clock, first_name="Anna", custom={"plan": "pro", "seats": "1.250,50"}
    )
    context = template_context(contact)
    assert json.loads(json.dumps(context)) == context
    assert context["contact"]["custom_plan"] == "Pro"
    assert context["contact"]["custom_seats"] == 1250.5
    assert context["contact"]["name"] == "Anna"
