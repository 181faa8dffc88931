"""The renderer: personalisation and escaping, inlining once, the text part, the sandbox."""

from __future__ import annotations

import re
import threading
import time
from typing import Any

import lxml.html
import pytest

from nurture.mail import render
from nurture.mail.inline import protect
from nurture.mail.render import (
    BUILTINS,
    MSG_MOVED,
    MSG_UNKNOWN,
    TemplateCache,
    TemplateError,
    TemplateSource,
    check_template,
    compile_template,
    load_builtin,
    sample_context,
)

UNSUBSCRIBE = "https://example.com/u/sample"
PREFERENCES = "https://example.com/p/sample"
AVAILABLE = (
    "contact, salutation, sender, lang, subject, preheader, unsubscribe_url(), "
    "preferences_url(), track_link(url)"
)
ROWS = (
    '<table class="items">{% for item in items %}'
    '<tr><td><a href="{{ track_link(item.url) }}">{{ item.name }}</a></td>'
    "<td>{{ item.price }}</td></tr>"
    "{% endfor %}</table>"
)


def context(lang: str = "de", **changes: Any) -> dict[str, Any]:
    ctx = sample_context(lang=lang)
    ctx.update(changes)
    return ctx


def contact(**changes: Any) -> dict[str, Any]:
    return {**sample_context()["contact"], **changes}


def element(html: str, xpath: str) -> lxml.html.HtmlElement:
    found = lxml.html.document_fromstring(html).xpath(xpath)
    assert found, xpath
    return found[0]


# -- personalisation and escaping ----------------------------------------------------------------


def test_renders_personalised_subject_html_and_text_escaping_only_the_html() -> None:
    source = TemplateSource(
        subject="Grüße an {{ contact.first_name }}",
        html="<p>{{ salutation }},</p><p>Schöne Grüße aus München, {{ contact.first_name }}!</p>",
    )
    name = 'Jörg <script>alert("x")</script>'
    mail = check_template(source, context(contact=contact(first_name=name)))

    assert mail.subject == f"Grüße an {name}"
    assert "Sehr geehrte Frau Dr. Müller," in mail.html
    assert "Schöne Grüße aus München, Jörg &lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;!" in (
        mail.html
    )
    assert "<script>" not in mail.html
    assert "&amp;lt;" not in mail.html  # escaped once, not twice
    assert f"Schöne Grüße aus München, {name}!" in mail.text
    assert "&lt;" not in mail.text and "&#34;" not in mail.text
    assert "<title>Grüße an Jörg &lt;script&gt;" in mail.html


def test_subject_is_one_line_whatever_the_contact_data() -> None:
    source = TemplateSource(subject="Hallo {{ contact.first_name }}", html="<p>x</p>")
    mail = check_template(source, context(contact=contact(first_name="Anna\r\nBcc: x@example.com")))
    assert mail.subject == "Hallo Anna Bcc: x@example.com"


def test_none_renders_as_nothing() -> None:
    source = TemplateSource(subject="S", html="<div>[{{ contact.company }}]</div>")
    assert "<div>[]</div>" in check_template(source, context(contact=contact(company=None))).html


# -- inlining --------------------------------------------------------------------------------------


def test_layout_css_is_inlined_and_media_queries_stay_in_a_style_block() -> None:
    source = TemplateSource(
        subject="S", html='<p class="note">Hinweis</p>', css=".note { color: #b91c1c; }"
    )
    html = check_template(source, context()).html

    assert "padding:32px" in element(html, '//td[@class="content"]').get("style")
    note = element(html, '//p[@class="note"]').get("style")
    assert "color:#b91c1c" in note and "margin:0 0 16px 0" in note  # marketer's and layout's
    style = element(html, "//style").text
    assert "@media" in style and "max-width: 620px" in style
    assert ".note" not in style  # inlined rules leave the <style> block
    assert "<img" not in html and "http://" not in html  # no images, pixels or external CSS


def test_jinja_in_href_and_a_loop_between_table_rows_survive_inlining() -> None:
    source = TemplateSource(subject="S", html=ROWS, variables=frozenset({"items"}))
    compiled = compile_template(source)
    assert '<a href="{{ track_link(item.url) }}"' in compiled.html_source  # not %7B%7B
    assert "{% for item in items %}" in compiled.html_source

    items = [
        {"name": f"Käse {i}", "price": f"{i},99 €", "url": f"https://shop.example/p/{i}?a=1&b=ü"}
        for i in range(3)
    ]
    ctx = context(items=items, track_link=lambda url: f"https://t.example/c?u={url}")
    mail = compiled.render(ctx)
    table = element(mail.html, '//table[@class="items"]')
    rows = table.xpath(".//tr")
    assert [row.text_content() for row in rows] == [f"Käse {i}{i},99 €" for i in range(3)]
    assert [a.get("href") for a in table.xpath(".//a")] == [
        f"https://t.example/c?u=https://shop.example/p/{i}?a=1&b=ü" for i in range(3)
    ]
    assert all("style" in row.xpath(".//td")[0].attrib for row in rows)  # inlined in the loop
    for i in range(3):
        assert f"Käse {i} (https://t.example/c?u=https://shop.example/p/{i}?a=1&b=ü)" in mail.text


def test_literal_braces_from_entities_stay_text() -> None:
    source = TemplateSource(subject="S", html="<div>&#123;&#123; contact.email }}</div>")
    mail = check_template(source, context())
    assert "<div>{{ contact.email }}</div>" in mail.html
    assert "anna.mueller@example.com" not in mail.html


# -- text part -----------------------------------------------------------------------------------


def test_text_part_is_generated_with_body_footer_and_readable_links() -> None:
    source = TemplateSource(
        subject="S",
        html="<h1>Neu</h1><p>Unser <strong>Herbstangebot</strong> ist da.</p>"
        '<p><a href="https://shop.example/herbst">Zum Angebot</a></p>',
    )
    text = check_template(source, context()).text

    assert "Unser Herbstangebot ist da." in text
    assert "Zum Angebot (https://shop.example/herbst)" in text
    assert f"Abmelden ({UNSUBSCRIBE})" in text
    assert f"Einstellungen ändern ({PREFERENCES})" in text
    assert "Musterstraße 1\n10115 Berlin" in text
    assert "jederzeit widersprechen" in text
    assert not re.search(r"</?[a-zA-Z][^>]*>", text)
    assert "{{" not in text and "{%" not in text
    assert "\n\n\n" not in text


def test_text_part_in_english() -> None:
    text = check_template(TemplateSource(subject="S", html="<p>New</p>"), context("en")).text
    assert f"Unsubscribe ({UNSUBSCRIBE})" in text
    assert f"Manage preferences ({PREFERENCES})" in text
    assert "You can object to the use of your email address at any time" in text


def test_a_hand_written_text_part_is_used_as_written() -> None:
    source = TemplateSource(
        subject="S",
        html="<p>x</p>",
        text="Hallo {{ contact.first_name }},\nabmelden: {{ unsubscribe_url() }}\n",
    )
    assert check_template(source, context()).text == f"Hallo Anna,\nabmelden: {UNSUBSCRIBE}\n"


def test_conditions_leave_no_empty_lines_in_the_text_part() -> None:
    html = "<p>Eins</p>{% if contact.company %}<p>Zwei</p>{% endif %}<p>Drei</p>"
    with_company = check_template(TemplateSource(subject="S", html=html), context()).text
    without = check_template(
        TemplateSource(subject="S", html=html), context(contact=contact(company=""))
    ).text
    assert "Eins\n\nZwei\n\nDrei" in with_company
    assert "Eins\n\nDrei" in without


# -- compile once ---------------------------------------------------------------------------------


@pytest.fixture
def inline_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real = render.inline_css

    def counting(html: str, css: str = "") -> str:
        calls.append(html)
        time.sleep(0.02)  # long enough for concurrent callers to overlap
        return real(html, css)

    monkeypatch.setattr(render, "inline_css", counting)
    return calls


def test_premailer_runs_once_per_cached_template_version(inline_calls: list[str]) -> None:
    cache = TemplateCache()
    source = TemplateSource(subject="Hallo {{ contact.first_name }}", html="<p>Hallo</p>")
    first = cache.get(("version", 1), lambda: source)
    second = cache.get(("version", 1), lambda: source)
    assert first is second
    assert len(inline_calls) == 1
    for _ in range(5):
        first.render(context())
    assert len(inline_calls) == 1  # rendering per recipient never inlines
    cache.get(("version", 2), lambda: source)
    assert len(inline_calls) == 2


def test_template_cache_evicts_the_least_recently_used(inline_calls: list[str]) -> None:
    cache = TemplateCache(maxsize=2)
    source = TemplateSource(subject="S", html="<p>x</p>")
    for key in (1, 2, 1, 3):  # 1 was used after 2, so 2 goes
        cache.get(key, lambda: source)
    assert len(inline_calls) == 3
    cache.get(1, lambda: source)
    assert len(inline_calls) == 3
    cache.get(2, lambda: source)
    assert len(inline_calls) == 4


def test_concurrent_misses_compile_once(inline_calls: list[str]) -> None:
    cache = TemplateCache()
    source = TemplateSource(subject="S", html="<p>x</p>")
    results: list[render.CompiledTemplate] = []
    threads = [
        threading.Thread(target=lambda: results.append(cache.get("k", lambda: source)))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(inline_calls) == 1
    assert len({id(result) for result in results}) == 1


def test_a_failed_compilation_is_not_cached() -> None:
    cache = TemplateCache()
    with pytest.raises(TemplateError):
        cache.get("k", lambda: TemplateSource(subject="S", html="{{ config }}"))
    fixed = cache.get("k", lambda: TemplateSource(subject="S", html="<div>ok</div>"))
    assert "<div>ok</div>" in fixed.render(context()).html


# -- the sandbox ---------------------------------------------------------------------------------


def test_reaching_for_internals_is_refused_with_a_readable_message() -> None:
    with pytest.raises(TemplateError) as refused:
        compile_template(TemplateSource(subject="S", html="<p>{{ ''.__class__ }}</p>"))
    assert str(refused.value) == (
        "The template tries to reach internal attributes (__class__) on line 1; "
        "this is not allowed."
    )
    assert refused.value.part == "html" and refused.value.line == 1


def test_an_unknown_name_is_refused_listing_what_is_available() -> None:
    with pytest.raises(TemplateError) as refused:
        compile_template(TemplateSource(subject="S", html="<p>Hallo</p>\n<p>{{ config }}</p>"))
    assert str(refused.value) == (
        f"The template uses {{{{ config }}}} on line 2, which is not available. "
        f"Available: {AVAILABLE}."
    )
    # A msgid with parameters: views translate it.
    assert refused.value.message == MSG_UNKNOWN
    assert refused.value.params["name"] == "config"


@pytest.mark.parametrize(
    ("template", "words"),
    [
        ("{{ cycler.__init__.__globals__ }}", "internal attributes (__globals__)"),
        ("{{ config }}", "{{ config }} on line 1"),
        ("{{ config.items() }}", "{{ config }} on line 1"),
        ("{{ request.environ }}", "{{ request }} on line 1"),
        ("{{ self.__dict__ }}", "internal attributes (__dict__)"),
        ("{{ self }}", "{{ self }} on line 1"),
        ("{{ lipsum.__globals__['os'] }}", "internal attributes (__globals__)"),
        ("{{ lipsum() }}", "{{ lipsum }} on line 1"),
        ("{{ namespace() }}", "{{ namespace }} on line 1"),
        ("{{ contact._secret }}", "internal attributes (_secret)"),
        ("{{ contact['__class__'] }}", "internal attributes (__class__)"),
        ("{{ contact | attr('__class__') }}", "internal attributes (__class__)"),
        ("{{ [contact] | map(attribute='__class__') | list }}", "internal attributes (__class__)"),
        ("{% import 'macros.html' as m %}", "{% import %} on line 1"),
        ("{% from 'macros.html' import m %}", "{% from %} on line 1"),
        ("{% include 'other.html' %}", "{% include %} on line 1"),
        ("{% extends 'base.html' %}", "{% extends %} on line 1"),
        ("{% call unknown_macro() %}x{% endcall %}", "{{ unknown_macro }} on line 1"),
    ],
)
@pytest.mark.parametrize("part", ["subject", "html", "text"])
def test_every_escape_attempt_is_refused_at_compile_time(
    template: str, words: str, part: str
) -> None:
    fields = {"subject": "S", "html": "<p>x</p>", "text": None, part: template}
    with pytest.raises(TemplateError) as refused:
        compile_template(TemplateSource(**fields))
    assert words in str(refused.value)
    assert refused.value.part == part


class Account:
    """A context value that should never have been passed: an object with dangerous members."""

    def __init__(self) -> None:
        self.deleted = False
        self.tags = ["kunde"]

    def delete(self) -> str:
        self.deleted = True
        return "deleted"

    delete.alters_data = True  # type: ignore[attr-defined]  # Django's marker, honoured by Jinja


@pytest.mark.parametrize(
    ("template", "words"),
    [
        ("{{ contact.delete() }}", "is not safely callable"),
        ("{% set key = '__cla' ~ 'ss__' %}{{ contact[key] }}", "attribute '__class__'"),
        ("{{ contact | attr('__cl' ~ 'ass__') }}", "attribute '__class__'"),
        ("{{ contact.tags.append('x') }}", "attribute 'append' of 'list'"),
        ("{{ '{0.__class__}'.format(contact) }}", "attribute '__class__'"),
    ],
)
def test_dangerous_values_are_refused_at_render_time(template: str, words: str) -> None:
    account = Account()
    compiled = compile_template(TemplateSource(subject="S", html=f"<p>{template}</p>"))
    with pytest.raises(TemplateError) as refused:
        compiled.render(context(contact=account))
    assert str(refused.value).startswith("The template tries something that is not allowed: ")
    assert words in str(refused.value)
    assert not account.deleted and account.tags == ["kunde"]


def test_globals_are_reduced_to_range() -> None:
    source = TemplateSource(
        subject="S", html="<div>{% for i in range(3) %}{{ i }}{% endfor %}</div>"
    )
    assert "<div>012</div>" in check_template(source, context()).html
    with pytest.raises(TemplateError, match="Range too big"):
        check_template(TemplateSource(subject="S", html="{{ range(10**9) | list }}"), context())


# -- undefined values and syntax errors ------------------------------------------------------------


def test_an_undefined_value_is_named_with_its_line() -> None:
    source = TemplateSource(subject="S", html="<p>Hallo</p>\n<p>{{ contact.nickname }}</p>")
    with pytest.raises(TemplateError) as refused:
        check_template(source, context())
    assert str(refused.value) == (
        "The template uses {{ contact.nickname }} on line 2, which has no value here. "
        "If it is optional, write {{ contact.nickname | default('') }}."
    )
    assert refused.value.part == "html" and refused.value.line == 2
    optional = TemplateSource(subject="S", html="<div>[{{ contact.nickname | default('') }}]</div>")
    assert "<div>[]</div>" in check_template(optional, context()).html


def test_undefined_values_in_subject_and_text_name_their_part() -> None:
    with pytest.raises(TemplateError) as subject:
        check_template(TemplateSource(subject="Hi {{ contact.nick }}", html="x"), context())
    assert subject.value.part == "subject" and "{{ contact.nick }} on line 1" in str(subject.value)
    source = TemplateSource(subject="S", html="x", text="Hallo\n{{ contact.nick }}")
    with pytest.raises(TemplateError) as text:
        check_template(source, context())
    assert text.value.part == "text" and "{{ contact.nick }} on line 2" in str(text.value)


def test_a_value_the_layout_needs_is_named() -> None:
    ctx = context()
    del ctx["sender"]
    with pytest.raises(TemplateError) as refused:
        check_template(TemplateSource(subject="S", html="<p>x</p>"), ctx)
    assert str(refused.value) == "The template uses {{ sender }}, which has no value here."


@pytest.mark.parametrize(
    ("html", "message"),
    [
        ("<p>Hallo</p>\n<p>{{ contact.first_name }</p>", "Syntax error on line 2: unexpected '}'"),
        ("<p>a</p>\n<p>{{ contact.first_name | shout }}</p>", "Syntax error on line 2: No filter"),
        ("<p>a</p>\n{% for x in %}", "Syntax error on line 2: Expected an expression"),
        (
            "<p>a</p>\n{% if contact.first_name %}\n<p>b</p>",
            "Syntax error on line 2: Unexpected end",
        ),
    ],
)
def test_syntax_errors_name_the_line(html: str, message: str) -> None:
    with pytest.raises(TemplateError) as refused:
        compile_template(TemplateSource(subject="S", html=html))
    assert str(refused.value).startswith(message)
    assert refused.value.line == 2


def test_css_may_not_contain_template_tags() -> None:
    with pytest.raises(TemplateError) as refused:
        compile_template(TemplateSource(subject="S", html="x", css="p { color: {{ c }} }"))
    assert refused.value.part == "css"


# -- tags that HTML processing would lose ----------------------------------------------------------


def test_protect_restores_exactly_and_notices_lost_tags() -> None:
    source = "<a href=\"{{ '}}' ~ x }}\">{% if y %}{{ {'a': {'b': 1}}['a'] }}{% endif %}</a>{# c #}"
    protected = protect(source)
    assert "{" not in protected.html
    assert protected.restore(protected.html) == source.replace("{# c #}", "")
    assert protected.lost(protected.html, expressions=True) is None
    without_endif = protected.html.replace(protected.prefix + "00003x", "")
    assert protected.lost(without_endif, expressions=True) == "{% endif %}"
    without_expression = protected.html.replace(protected.prefix + "00000x", "")
    assert protected.lost(without_expression, expressions=False) is None
    assert protected.lost(without_expression, expressions=True) == "{{ '}}' ~ x }}"


def test_a_tag_the_html_parser_would_drop_is_refused() -> None:
    html = "<!DOCTYPE html><html><head></head><body><p>x</p></body></html>{% if lang %}{% endif %}"
    with pytest.raises(TemplateError) as refused:
        compile_template(TemplateSource(subject="S", html=html, layout=None))
    assert refused.value.message == MSG_MOVED
    assert refused.value.params["tag"] == "{% if lang %}"


def test_a_full_document_without_layout() -> None:
    html = (
        '<!DOCTYPE html><html lang="de"><head><meta charset="utf-8"><title>T</title>'
        "<style>p { color: #123456 }</style></head><body><p>Hallo {{ contact.first_name }}</p>"
        '<p><a href="{{ unsubscribe_url() }}">Abmelden</a></p></body></html>'
    )
    mail = check_template(TemplateSource(subject="S", html=html, layout=None), context())
    assert '<p style="color:#123456">Hallo Anna</p>' in mail.html
    assert mail.text == f"Hallo Anna\n\nAbmelden ({UNSUBSCRIBE})\n"


# -- built-in system mails -----------------------------------------------------------------------


@pytest.mark.parametrize("lang", ["de", "en"])
@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_builtins_render_in_both_languages_without_marketing_footer(name: str, lang: str) -> None:
    source = load_builtin(name)
    assert source.layout == "system"
    mail = check_template(source, context(lang))

    assert mail.subject and "{" not in mail.subject
    for part in (mail.html, mail.text):
        assert UNSUBSCRIBE not in part and PREFERENCES not in part
        assert "Abmelden" not in part and "Unsubscribe" not in part
        assert "Musterstraße 1" in part
    assert "<img" not in mail.html
    assert "track_link" not in compile_template(source).html_source
    assert f'<html lang="{lang}">' in mail.html
    assert len(mail.text) > 200


def test_optin_confirmation_has_only_the_request_and_the_link() -> None:
    ctx = context()
    de = check_template(load_builtin("optin_confirmation"), ctx)
    assert de.subject == "Bitte bestätigen Sie Ihre E-Mail-Adresse"
    assert 'href="https://example.com/confirm/sample"' in de.html
    assert "Anmeldung bestätigen (https://example.com/confirm/sample)" in de.text
    assert "Bitte bestätigen Sie" in de.html and "7 Tage" in de.text
    assert "Im Browser ansehen" not in de.html
    assert re.findall(r'href="([^"]+)"', de.html) == [ctx["confirm_url"]] * 2
    en = check_template(load_builtin("optin_confirmation"), context("en"))
    assert en.subject == "Please confirm your email address"
    assert "Confirm my request (https://example.com/confirm/sample)" in en.text


def test_sales_notification_names_the_contact_and_links_the_lead() -> None:
    ctx = context()
    mail = check_template(load_builtin("sales_notification"), ctx)
    assert mail.subject == "Kontakt wieder aktiv: Dr. Anna Müller"
    assert "Lead öffnen (https://example.com/leads/1)" in mail.text
    assert "Anlass: Klick auf „Angebot ansehen“" in mail.text
    assert "Erlaubte Kanäle: E-Mail, Telefon\n" in mail.text
    assert "+49 30 1234567" in mail.text
    # No phone number unless calls are allowed.
    ctx["lead"] = {**ctx["lead"], "channels": ["email"]}
    mail = check_template(load_builtin("sales_notification"), ctx)
    assert "+49 30 1234567" not in mail.html and "+49 30 1234567" not in mail.text
    en = check_template(load_builtin("sales_notification"), context("en"))
    assert en.subject == "Contact re-engaged: Dr. Anna Müller"
    assert "Open the lead (https://example.com/leads/1)" in en.text


def test_an_unknown_builtin_is_a_programming_error() -> None:
    with pytest.raises(LookupError):
        load_builtin("newsletter")
