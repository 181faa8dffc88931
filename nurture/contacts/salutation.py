"""Salutations: German and English mail greetings that follow business etiquette."""

from __future__ import annotations

import enum
import re
import unicodedata
from dataclasses import dataclass


class Gender(enum.StrEnum):
    """Gender as the contact stated it; it is never guessed from the first name."""

    FEMALE = "female"
    MALE = "male"
    DIVERSE = "diverse"
    UNKNOWN = "unknown"


class Formality(enum.StrEnum):
    """How the recipient is addressed: Sie / "Ms Smith", or Du / first name."""

    FORMAL = "formal"
    INFORMAL = "informal"


@dataclass(frozen=True)
class Person:
    """Everything a greeting may use about one recipient, as entered."""

    first_name: str = ""
    last_name: str = ""
    gender: Gender = Gender.UNKNOWN
    title: str = ""  # academic title as entered: "Dr.", "Prof. Dr.", "Dr. med.", "Dipl.-Ing." …
    language: str = "de"  # "de", "de-AT", "de_CH" → German; anything else → English
    formality: Formality = Formality.FORMAL


# Key: the title's letters, case-folded, without dots and hyphens, so "Prof.Dr.", "prof dr" and
# "PROF. DR." all find their entries. Value: (canonical spelling, form used in a greeting).
# Only doctorates and professorships are spoken in a German greeting ("Sehr geehrte Frau Dr.
# Müller"); faculty suffixes ("Dr. med.") belong in the address block, not the salutation, and
# Diplom/Bachelor/Master degrees are never used in an Anrede.
_TITLES: dict[str, tuple[str, str]] = {
    "prof": ("Prof.", "Prof."),
    "professor": ("Prof.", "Prof."),
    "dr": ("Dr.", "Dr."),
    "doktor": ("Dr.", "Dr."),
    "dring": ("Dr.-Ing.", "Dr."),
    **{k: (v, "") for k, v in {
        "med": "med.", "dent": "dent.", "vet": "vet.", "phil": "phil.", "jur": "jur.",
        "iur": "iur.", "theol": "theol.", "rernat": "rer. nat.", "rerpol": "rer. pol.",
        "reroec": "rer. oec.", "hc": "h. c.", "mult": "mult.", "habil": "habil.",
        "privdoz": "Priv.-Doz.", "dipl": "Dipl.", "dipling": "Dipl.-Ing.",
        "diplkfm": "Dipl.-Kfm.", "diplkffr": "Dipl.-Kffr.", "diplinform": "Dipl.-Inform.",
        "diplpsych": "Dipl.-Psych.", "diplphys": "Dipl.-Phys.", "diplchem": "Dipl.-Chem.",
        "diplbiol": "Dipl.-Biol.", "diplvolksw": "Dipl.-Volksw.", "mag": "Mag.",
        "ba": "B.A.", "ma": "M.A.", "bsc": "B.Sc.", "msc": "M.Sc.", "beng": "B.Eng.",
        "meng": "M.Eng.", "llb": "LL.B.", "llm": "LL.M.", "mba": "MBA", "phd": "PhD",
    }.items()},
}  # fmt: skip
_ATOM = re.compile(r"[^.]*\.|[^.]+")  # "Prof.Dr.-Ing." → "Prof.", "Dr.", "-Ing."
_MAX_SPAN = 4  # atoms one title may span: "L.L.M." is three
_KEY_JUNK = re.compile(r"[.\-]")

# Nobility and similar particles stay lowercase in front of the surname ("von Weizsäcker").
_PARTICLES = frozenset({"van", "von", "der", "de", "zu", "den", "di", "da", "la", "le"})
_BOUNDARIES = "-'’."  # a new capital follows these: "Anna-Lena", "O'Neill"


def _clean(value: object) -> str:
    """Text with control characters removed and whitespace trimmed and collapsed."""
    if not isinstance(value, str):
        return ""
    kept = "".join(c for c in value if c.isspace() or unicodedata.category(c) != "Cc")
    return " ".join(kept.split())


def _recase(char: str, upper: bool) -> str:
    """One character in the other case, kept as is where that would change its length."""
    changed = char.upper() if upper else char.lower()
    return changed if len(changed) == 1 else char  # "ß".upper() is "SS"


def normalise_name(raw: str) -> str:
    """A name trimmed, and title-cased only when it was typed all in capitals or all lowercase."""
    name = _clean(raw)
    cased = sum(1 for c in name if c.isupper() or c.islower())
    # Mixed case is deliberate ("McDonald", "de Vries"): only shouted or lazy input is touched.
    if cased < 2 or not (name.isupper() or name.islower()):
        return name
    words = name.split(" ")
    out: list[str] = []
    for pos, word in enumerate(words):
        if word.casefold() in _PARTICLES and pos < len(words) - 1:
            out.append("".join(_recase(c, False) for c in word))
            continue
        chars: list[str] = []
        start = True
        for c in word:
            chars.append(_recase(c, start))
            start = c in _BOUNDARIES or (start and not c.isalpha())
        out.append("".join(chars))
    return " ".join(out)


def _title_tokens(raw: object) -> list[tuple[str, str, int]]:
    """Title tokens as (spelling, greeting form, word index of an unknown token or -1)."""
    atoms = [(a, n) for n, word in enumerate(_clean(raw).split(" ")) for a in _ATOM.findall(word)]
    tokens: list[tuple[str, str, int]] = []
    i = 0
    while i < len(atoms):
        for j in range(min(len(atoms), i + _MAX_SPAN), i, -1):  # longest match first
            key = _KEY_JUNK.sub("", "".join(a for a, _ in atoms[i:j])).casefold()
            if key in _TITLES:
                tokens.append((*_TITLES[key], -1))
                i = j
                break
        else:
            tokens.append((atoms[i][0], "", atoms[i][1]))
            i += 1
    return tokens


def normalise_title(raw: str) -> str:
    """Canonical spelling of academic titles; unknown tokens are kept as typed."""
    parts: list[str] = []
    previous = -1
    for text, _, word in _title_tokens(raw):
        if word >= 0 and word == previous:
            parts[-1] += text  # pieces of one unknown word were split at dots: glue them back
        else:
            parts.append(text)
        previous = word
    return " ".join(parts)


def _greeting_title(raw: str, german: bool) -> str:
    """The title as spoken in a greeting: "Prof. Dr." in German, "Professor" or "Dr" in English."""
    spoken = [greeting for _, greeting, _ in _title_tokens(raw) if greeting]
    if german:
        return " ".join(spoken)  # "Prof. Dr." is expected as entered, not cut to the highest
    # British usage: no full stop, one title only, and it replaces Mr/Ms.
    return "Professor" if "Prof." in spoken else "Dr" if spoken else ""


def _is_german(language: object) -> bool:
    """Whether the language tag's primary subtag is "de" ("de-AT", "de_CH", "DE")."""
    if not isinstance(language, str):
        return False
    return re.split(r"[-_]", language.strip(), maxsplit=1)[0].casefold() == "de"


def _join(*parts: str) -> str:
    return " ".join(part for part in parts if part)


def _parts(person: Person) -> tuple[str, str]:
    """The greeting's opening words and the address form that follows them."""
    first, last = normalise_name(person.first_name), normalise_name(person.last_name)
    german = _is_german(person.language)
    female = person.gender == Gender.FEMALE
    gendered = bool(last) and (female or person.gender == Gender.MALE)
    if person.formality == Formality.INFORMAL:
        # Du means first name; a title or surname would undo the informality. Without a first
        # name, German still has "Hallo Frau Müller"; English has no such middle ground.
        if first:
            return ("Hallo" if german else "Hi"), first
        if german and gendered:
            return "Hallo", _join("Frau" if female else "Herr", last)
        return ("Hallo" if german else "Hi"), ""
    title = _greeting_title(person.title, german)
    if german:
        if gendered:
            return ("Sehr geehrte" if female else "Sehr geehrter"), _join(
                "Frau" if female else "Herr", title, last
            )
        # Without a stated gender, "Frau"/"Herr" would be a guess: name the whole person instead.
        if first and last:
            return "Guten Tag", _join(title, first, last)
        if first:
            return "Guten Tag", first  # "Guten Tag Dr. Anna" is not a thing
        # A bare surname ("Guten Tag Müller") reads as rude in German: use the neutral form.
        return "Sehr geehrte Damen und Herren", ""
    if last and title:
        return "Dear", _join(title, last)  # "Dear Dr Smith" needs no gender
    if gendered:
        return "Dear", _join("Ms" if female else "Mr", last)  # never assume Mx
    if first:
        return "Dear", _join(first, last)
    return "Dear Sir or Madam", ""


def salutation(person: Person) -> str:
    """The greeting line without a trailing comma, e.g. "Sehr geehrte Frau Dr. Müller"."""
    return _join(*_parts(person))


def letter_greeting(person: Person) -> str:
    """The greeting line as it opens a letter: the salutation with its comma."""
    return salutation(person) + ","


def address_form(person: Person) -> str:
    """How to name the person in running text ("Frau Dr. Müller", "Ms Smith"); "" if unknown."""
    return _parts(person)[1]
