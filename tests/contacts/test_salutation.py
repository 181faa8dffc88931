"""Salutation engine: German and English greetings by etiquette, titles and name casing."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nurture.contacts.salutation import (
    Formality,
    Gender,
    Person,
    address_form,
    letter_greeting,
    normalise_name,
    normalise_title,
    salutation,
)

F, M, D, U = Gender.FEMALE, Gender.MALE, Gender.DIVERSE, Gender.UNKNOWN
FORMAL, INF = Formality.FORMAL, Formality.INFORMAL
NEUTRAL_DE = "Sehr geehrte Damen und Herren"
NEUTRAL_EN = "Dear Sir or Madam"


def de(
    first: str = "",
    last: str = "",
    gender: Gender = U,
    title: str = "",
    formality: Formality = FORMAL,
) -> Person:
    return Person(first, last, gender, title, "de", formality)


def en(
    first: str = "",
    last: str = "",
    gender: Gender = U,
    title: str = "",
    formality: Formality = FORMAL,
) -> Person:
    return Person(first, last, gender, title, "en", formality)


CASES: list[tuple[str, Person, str]] = [
    # German, formal, gender stated: Frau/Herr plus the spoken title and the surname.
    ("de-f-dr", de("Anna", "Müller", F, "Dr."), "Sehr geehrte Frau Dr. Müller"),
    ("de-m-prof-dr", de("Klaus", "Weber", M, "Prof. Dr."), "Sehr geehrter Herr Prof. Dr. Weber"),
    ("de-f", de("Anna", "Müller", F), "Sehr geehrte Frau Müller"),
    ("de-m", de("Klaus", "Weber", M), "Sehr geehrter Herr Weber"),
    ("de-f-last-only", de("", "Müller", F), "Sehr geehrte Frau Müller"),
    ("de-m-last-only-dr", de("", "Weber", M, "dr"), "Sehr geehrter Herr Dr. Weber"),
    ("de-f-dr-med", de("Anna", "Müller", F, "Dr. med."), "Sehr geehrte Frau Dr. Müller"),
    ("de-m-dr-ing", de("Klaus", "Weber", M, "Dr.-Ing."), "Sehr geehrter Herr Dr. Weber"),
    ("de-m-rer-nat", de("Klaus", "Weber", M, "Dr. rer. nat."), "Sehr geehrter Herr Dr. Weber"),
    ("de-m-dipl-ing", de("Klaus", "Weber", M, "Dipl.-Ing."), "Sehr geehrter Herr Weber"),
    ("de-f-msc", de("Anna", "Müller", F, "M.Sc."), "Sehr geehrte Frau Müller"),
    ("de-f-dipl-kfm", de("Anna", "Müller", F, "Dipl.-Kfm."), "Sehr geehrte Frau Müller"),
    ("de-m-ba", de("Klaus", "Weber", M, "B.A."), "Sehr geehrter Herr Weber"),
    ("de-m-prof-dr-squashed", de("", "Weber", M, "Prof.Dr."), "Sehr geehrter Herr Prof. Dr. Weber"),
    ("de-f-prof-lower", de("Anna", "Müller", F, "prof"), "Sehr geehrte Frau Prof. Müller"),
    ("de-m-dr-dr", de("Klaus", "Weber", M, "Dr. Dr."), "Sehr geehrter Herr Dr. Dr. Weber"),
    (
        "de-m-prof-dr-ing-habil",
        de("Klaus", "Weber", M, "Prof. Dr.-Ing. habil."),
        "Sehr geehrter Herr Prof. Dr. Weber",
    ),
    ("de-f-junk-title", de("Anna", "Müller", F, "Herr"), "Sehr geehrte Frau Müller"),
    ("de-m-mr-title", de("Klaus", "Weber", M, "Mr."), "Sehr geehrter Herr Weber"),
    (
        "de-m-nobility",
        de("Richard", "von Weizsäcker", M),
        "Sehr geehrter Herr von Weizsäcker",
    ),
    # German, formal, no stated gender: never Frau/Herr; the whole name instead.
    ("de-u-full", de("Alex", "Schmidt"), "Guten Tag Alex Schmidt"),
    ("de-d-full", de("Alex", "Schmidt", D), "Guten Tag Alex Schmidt"),
    ("de-u-full-dr", de("Alex", "Schmidt", U, "Dr."), "Guten Tag Dr. Alex Schmidt"),
    (
        "de-d-full-prof-dr",
        de("Alex", "Schmidt", D, "Prof. Dr."),
        "Guten Tag Prof. Dr. Alex Schmidt",
    ),
    ("de-d-full-dipl", de("Alex", "Schmidt", D, "Dipl.-Ing."), "Guten Tag Alex Schmidt"),
    ("de-u-no-guess-anna", de("Anna", "Schmidt"), "Guten Tag Anna Schmidt"),
    ("de-u-no-guess-klaus", de("Klaus", "Schmidt"), "Guten Tag Klaus Schmidt"),
    ("de-u-first-only", de("Alex"), "Guten Tag Alex"),
    ("de-f-first-only", de("Anna", "", F), "Guten Tag Anna"),
    ("de-f-first-only-dr", de("Anna", "", F, "Dr."), "Guten Tag Anna"),
    ("de-u-last-only", de("", "Schmidt"), NEUTRAL_DE),
    ("de-d-last-only", de("", "Schmidt", D), NEUTRAL_DE),
    ("de-u-last-only-dr", de("", "Schmidt", U, "Dr."), NEUTRAL_DE),
    ("de-nothing", de(), NEUTRAL_DE),
    ("de-f-no-name", de("", "", F), NEUTRAL_DE),
    ("de-m-title-only", de("", "", M, "Dr."), NEUTRAL_DE),
    ("de-whitespace-only", de("   ", "\t\n", F, "  "), NEUTRAL_DE),
    # German, informal (Du): first name only; Frau/Herr as the fallback; else just Hallo.
    ("de-inf-f", de("Anna", "Müller", F, formality=INF), "Hallo Anna"),
    ("de-inf-f-dr", de("Anna", "Müller", F, "Dr.", formality=INF), "Hallo Anna"),
    ("de-inf-u", de("Alex", "Schmidt", formality=INF), "Hallo Alex"),
    ("de-inf-first-only", de("Anna", formality=INF), "Hallo Anna"),
    ("de-inf-f-last-only", de("", "Müller", F, formality=INF), "Hallo Frau Müller"),
    ("de-inf-m-last-only-prof", de("", "Weber", M, "Prof.", formality=INF), "Hallo Herr Weber"),
    ("de-inf-u-last-only", de("", "Schmidt", formality=INF), "Hallo"),
    ("de-inf-d-last-only", de("", "Schmidt", D, formality=INF), "Hallo"),
    ("de-inf-nothing", de(formality=INF), "Hallo"),
    # English, formal: British Ms/Mr without full stop; a title replaces them.
    ("en-f", en("Jane", "Smith", F), "Dear Ms Smith"),
    ("en-m", en("John", "Smith", M), "Dear Mr Smith"),
    ("en-f-last-only", en("", "Smith", F), "Dear Ms Smith"),
    ("en-f-dr", en("Jane", "Smith", F, "Dr."), "Dear Dr Smith"),
    ("en-m-prof", en("John", "Smith", M, "Prof."), "Dear Professor Smith"),
    ("en-m-prof-dr", en("John", "Smith", M, "Prof. Dr."), "Dear Professor Smith"),
    ("en-m-dr-med", en("John", "Smith", M, "Dr. med."), "Dear Dr Smith"),
    ("en-u-dr", en("Alex", "Smith", U, "Dr."), "Dear Dr Smith"),
    ("en-u-last-only-dr", en("", "Smith", U, "dr"), "Dear Dr Smith"),
    ("en-f-msc", en("Jane", "Smith", F, "M.Sc."), "Dear Ms Smith"),
    ("en-u-full", en("Alex", "Smith"), "Dear Alex Smith"),
    ("en-d-full-no-mx", en("Alex", "Smith", D), "Dear Alex Smith"),
    ("en-u-first-only", en("Alex"), "Dear Alex"),
    ("en-f-first-only", en("Jane", "", F), "Dear Jane"),
    ("en-u-last-only", en("", "Smith"), NEUTRAL_EN),
    ("en-nothing", en(), NEUTRAL_EN),
    # English, informal.
    ("en-inf-m", en("Tom", "Smith", M, formality=INF), "Hi Tom"),
    ("en-inf-m-dr", en("Tom", "Smith", M, "Dr.", formality=INF), "Hi Tom"),
    ("en-inf-f-last-only", en("", "Smith", F, formality=INF), "Hi"),
    ("en-inf-nothing", en(formality=INF), "Hi"),
    # Language tags.
    ("lang-de-DE", Person("Anna", "Müller", F, language="de-DE"), "Sehr geehrte Frau Müller"),
    ("lang-de_AT", Person("Anna", "Müller", F, language="de_AT"), "Sehr geehrte Frau Müller"),
    ("lang-DE", Person("Anna", "Müller", F, language="DE"), "Sehr geehrte Frau Müller"),
    ("lang-de-padded", Person("Anna", "Müller", F, language=" de "), "Sehr geehrte Frau Müller"),
    ("lang-de-CH-inf", Person("Anna", language="de-CH", formality=INF), "Hallo Anna"),
    ("lang-en-US-inf", Person("Tom", language="en-US", formality=INF), "Hi Tom"),
    ("lang-fr", Person("Marie", "Dupont", F, language="fr"), "Dear Ms Dupont"),
    ("lang-empty", Person(language=""), NEUTRAL_EN),
    ("lang-deu-is-not-de", Person("", "Weber", M, language="deu"), "Dear Mr Weber"),
    # Whitespace and casing of names as typed.
    ("case-caps", de("  ANNA ", " MÜLLER  ", F), "Sehr geehrte Frau Müller"),
    ("case-caps-nobility", de("KLAUS", "VON WEIZSÄCKER", M), "Sehr geehrter Herr von Weizsäcker"),
    ("case-hyphen", de("anna-lena", "schmidt"), "Guten Tag Anna-Lena Schmidt"),
    ("case-apostrophe", en("sean", "o'neill"), "Dear Sean O'Neill"),
    ("case-particles", de("Jan", "van der berg", M), "Sehr geehrter Herr van der Berg"),
    ("case-mixed-kept", en("Ann", "McDonald", F), "Dear Ms McDonald"),
    ("case-caps-mc", en("", "MCDONALD", M), "Dear Mr Mcdonald"),
    ("case-collapse", de("Anna \n  Lena", "Müller", formality=INF), "Hallo Anna Lena"),
]


@pytest.mark.parametrize(("person", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_salutation(person: Person, expected: str) -> None:
    assert salutation(person) == expected
    assert letter_greeting(person) == expected + ","


def test_table_is_large_enough() -> None:
    assert len(CASES) >= 60
    assert len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize(
    ("person", "expected"),
    [
        (de("Anna", "Müller", F, "Dr. med."), "Frau Dr. Müller"),
        (de("Klaus", "Weber", M, "prof dr"), "Herr Prof. Dr. Weber"),
        (de("Alex", "Schmidt"), "Alex Schmidt"),
        (de("Alex", "Schmidt", D, "Dr."), "Dr. Alex Schmidt"),
        (de("Alex"), "Alex"),
        (de("", "Schmidt"), ""),
        (de(), ""),
        (de("Anna", "Müller", F, formality=INF), "Anna"),
        (de("", "Müller", F, formality=INF), "Frau Müller"),
        (en("Jane", "Smith", F), "Ms Smith"),
        (en("", "Smith", U, "Prof. Dr."), "Professor Smith"),
        (en("", "Smith"), ""),
        (en("", "Smith", F, formality=INF), ""),
    ],
)
def test_address_form(person: Person, expected: str) -> None:
    assert address_form(person) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("dr", "Dr."),
        ("Dr.", "Dr."),
        ("DR", "Dr."),
        ("Doktor", "Dr."),
        ("prof", "Prof."),
        ("Professor", "Prof."),
        ("prof dr", "Prof. Dr."),
        ("Prof.Dr.", "Prof. Dr."),
        ("PROF. DR.", "Prof. Dr."),
        ("  Prof.   Dr.  ", "Prof. Dr."),
        ("DR. MED.", "Dr. med."),
        ("dr.med.dent.", "Dr. med. dent."),
        ("Dr.rer.nat.", "Dr. rer. nat."),
        ("dr rer pol", "Dr. rer. pol."),
        ("Dr. h.c. mult.", "Dr. h. c. mult."),
        ("Dr.-Ing.", "Dr.-Ing."),
        ("dr-ing", "Dr.-Ing."),
        ("Dr. Ing.", "Dr.-Ing."),
        ("Prof. Dr.-Ing. habil.", "Prof. Dr.-Ing. habil."),
        ("Dipl.-Ing.", "Dipl.-Ing."),
        ("dipl.-ing.", "Dipl.-Ing."),
        ("Dipl.-Ing. (FH)", "Dipl.-Ing. (FH)"),
        ("dipl kfm", "Dipl.-Kfm."),
        ("M.Sc.", "M.Sc."),
        ("msc", "M.Sc."),
        ("B.A.", "B.A."),
        ("ll.m.", "LL.M."),
        ("MBA", "MBA"),
        ("Priv.-Doz. Dr.", "Priv.-Doz. Dr."),
        ("Herr", "Herr"),
        ("Mr.", "Mr."),
        ("  foo   bar ", "foo bar"),
        ("Dr. Foo.Bar", "Dr. Foo.Bar"),
        ("", ""),
        ("...", "..."),
    ],
)
def test_normalise_title(raw: str, expected: str) -> None:
    assert normalise_title(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("MÜLLER", "Müller"),
        ("müller", "Müller"),
        ("Müller", "Müller"),
        ("anna-lena", "Anna-Lena"),
        ("ANNA-LENA", "Anna-Lena"),
        ("o'neill", "O'Neill"),
        ("O'NEILL", "O'Neill"),
        ("MCDONALD", "Mcdonald"),
        ("McDonald", "McDonald"),
        ("van der berg", "van der Berg"),
        ("VON WEIZSÄCKER", "von Weizsäcker"),
        ("de la cruz", "de la Cruz"),
        ("le", "Le"),  # a particle needs a name after it; alone it is the name
        ("di", "Di"),
        ("de Vries", "de Vries"),  # mixed case is deliberate and kept
        ("GROSS", "Gross"),
        ("straße", "Straße"),
        ("ßa", "ßa"),  # "ß".upper() is "SS": never change a name's length
        ("a", "a"),  # fewer than two letters: too little to judge the casing
        ("  anna   maria ", "Anna Maria"),
        ("", ""),
        ("x\x00y", "Xy"),  # control characters are dropped
    ],
)
def test_normalise_name(raw: str, expected: str) -> None:
    assert normalise_name(raw) == expected


def test_plain_strings_for_enums_and_none_fields_do_not_raise() -> None:
    assert salutation(Person("Anna", "Müller", "female", formality="formal")) == (  # type: ignore[arg-type]
        "Sehr geehrte Frau Müller"
    )
    assert salutation(Person("Anna", gender="female", formality="informal")) == "Hallo Anna"  # type: ignore[arg-type]
    odd = Person(None, 42, "bogus", None, None, "bogus")  # type: ignore[arg-type]
    assert salutation(odd) == NEUTRAL_EN
    assert normalise_title(None) == ""  # type: ignore[arg-type]


# --- properties ---------------------------------------------------------------------------

NAMES = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["Anna", "MÜLLER", "von Weizsäcker", "o'neill", " Alex ", "Herr", "None"]),
)
TITLES = st.one_of(
    st.text(max_size=20),
    st.sampled_from(["Dr.", "prof dr", "Prof.Dr.", "Dr. med.", "Dipl.-Ing.", "M.Sc.", "Herr"]),
)
LANGUAGES = st.one_of(st.text(max_size=8), st.sampled_from(["de", "de-AT", "de_CH", "DE", "en"]))
PEOPLE = st.builds(
    Person,
    first_name=NAMES,
    last_name=NAMES,
    gender=st.sampled_from(Gender),
    title=TITLES,
    language=LANGUAGES,
    formality=st.sampled_from(Formality),
)
PROPERTY = settings(max_examples=400, deadline=None)
FIXED_WORDS = (
    "Sehr geehrte Frau Herr Guten Tag Damen und Hallo Dear Sir or Madam Ms Mr Dr. Professor Hi"
)


def _is_german(person: Person) -> bool:
    return person.language.strip().replace("_", "-").split("-")[0].lower() == "de"


@PROPERTY
@given(PEOPLE)
def test_output_is_tidy(person: Person) -> None:
    out = salutation(person)
    assert out
    assert out == out.strip()
    assert "  " not in out
    assert letter_greeting(person) == out + ","
    fields = (person.first_name, person.last_name, person.title)
    if "none" not in " ".join(fields).casefold():
        assert "None" not in out


@PROPERTY
@given(PEOPLE)
def test_opening_words(person: Person) -> None:
    out = salutation(person)
    german = _is_german(person)
    if person.formality is Formality.INFORMAL:
        opener = "Hallo" if german else "Hi"
        assert out == opener or out.startswith(opener + " ")
    elif german:
        assert out.startswith(("Sehr geehrte", "Guten Tag"))
    else:
        assert out.startswith("Dear")


@PROPERTY
@given(PEOPLE)
def test_formal_gendered_greeting_names_the_last_name(person: Person) -> None:
    last = normalise_name(person.last_name)
    if person.formality is Formality.FORMAL and person.gender in (F, M) and last:
        assert salutation(person).endswith(" " + last)


@PROPERTY
@given(PEOPLE)
def test_gender_is_never_guessed(person: Person) -> None:
    if person.gender in (F, M):
        return
    names = f"{normalise_name(person.first_name)} {normalise_name(person.last_name)}".split()
    assert set(salutation(person).split()) & {"Frau", "Herr", "Ms", "Mr"} <= set(names)


@PROPERTY
@given(PEOPLE)
def test_only_input_characters_and_fixed_words(person: Person) -> None:
    allowed = set(FIXED_WORDS)
    for char in person.first_name + person.last_name + person.title:
        allowed |= {c for c in (char, char.upper(), char.lower()) if len(c) == 1}
    assert set(salutation(person)) <= allowed


@PROPERTY
@given(PEOPLE)
def test_address_form_ends_the_salutation(person: Person) -> None:
    form = address_form(person)
    assert form == form.strip()
    if form:
        assert salutation(person).endswith(" " + form)


@PROPERTY
@given(st.one_of(st.text(), TITLES))
def test_normalise_title_is_total_and_idempotent(raw: str) -> None:
    once = normalise_title(raw)
    assert once == once.strip()
    assert "  " not in once
    assert normalise_title(once) == once


@PROPERTY
@given(NAMES)
def test_normalise_name_is_idempotent_and_keeps_length(raw: str) -> None:
    once = normalise_name(raw)
    assert normalise_name(once) == once
    assert len(once) <= len(raw)
