"""Mail templates: sandboxed Jinja, CSS inlined once per version, a cheap render per recipient.

compile_template() checks a template, splices the body into its layout, inlines the CSS and
derives the text part once; CompiledTemplate.render() then only runs Jinja. Templates are
written by marketers, so they run in an immutable sandbox, may only name the documented context
variables, and every problem becomes a TemplateError a marketer can act on.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache, partial
from pathlib import Path
from typing import Any

from jinja2 import StrictUndefined, nodes
from jinja2 import Template as JinjaTemplate
from jinja2.exceptions import TemplateSyntaxError, UndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError
from jinja2.utils import missing

from nurture.config import Settings
from nurture.errors import N_, UserFacingError
from nurture.mail.inline import (
    JINJA_START,
    expression_at,
    html_to_text,
    inline_css,
    internal_name,
    protect,
    template_line,
    walk,
)

TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "templates" / "mail"
LAYOUTS = {"default": "layout.html", "system": "layout_system.html"}
BODY_MARKER = "{# body #}"  # where a layout takes the body, spliced in before inlining

# What a template may name: the caller passes these (the callables with these arguments), and
# "subject" is the rendered subject. Shown to marketers in the "not available" message.
CONTEXT_VARIABLES = (
    "contact",
    "salutation",
    "sender",
    "lang",
    "subject",
    "preheader",
    "unsubscribe_url()",
    "preferences_url()",
    "track_link(url)",
)
# Extra variables of the built-in system mails, beyond the standard ones.
BUILTINS: dict[str, tuple[str, ...]] = {
    "optin_confirmation": ("confirm_url", "expires_days", "topic"),
    "repermission": ("confirm_url", "expires_days", "topic", "lapse_date"),
    "sales_notification": ("recipient", "lead", "lead_url"),
}
# The built-in mails whose link confirms a consent request (confirm_url is derived at send time).
CONFIRMING_BUILTINS = frozenset({"optin_confirmation", "repermission"})
# Names every template may use: Jinja's loop helpers; "range" is the one global left.
_ALWAYS = frozenset({"loop", "caller", "varargs", "kwargs", "range"})
_LOADERS = {
    nodes.Extends: "extends",
    nodes.Include: "include",
    nodes.Import: "import",
    nodes.FromImport: "from",
}
_PART_FILES = frozenset({"<subject>", "<html>", "<text>", "<body>"})
_BLANK_LINES = re.compile(r"\n(?:[ \t]*\n){2,}")

MSG_SYNTAX = N_("Syntax error on line %(line)s: %(detail)s")
MSG_UNKNOWN = N_(
    "The template uses {{ %(name)s }} on line %(line)s, which is not available. "
    "Available: %(available)s."
)
MSG_INTERNAL = N_(
    "The template tries to reach internal attributes (%(name)s) on line %(line)s; "
    "this is not allowed."
)
MSG_LOADS = N_(
    "The template uses {%% %(tag)s %%} on line %(line)s; templates cannot load other templates."
)
MSG_UNDEFINED_LINE = N_(
    "The template uses {{ %(name)s }} on line %(line)s, which has no value here. "
    "If it is optional, write {{ %(name)s | default('') }}."
)
# Without a line the layout lacks the value: the caller's context is incomplete.
MSG_UNDEFINED = N_("The template uses {{ %(name)s }}, which has no value here.")
MSG_FORBIDDEN = N_("The template tries something that is not allowed: %(detail)s")
MSG_FAILED = N_("The template cannot be rendered: %(detail)s")
MSG_HTML = N_("The HTML or CSS cannot be processed: %(detail)s")
MSG_MOVED = N_(
    "The template tag %(tag)s sits where HTML does not allow it, so it would be moved or lost; "
    "put it inside an element or an attribute value."
)
MSG_TEXT = N_(
    "The text part cannot be generated because the template tag %(tag)s sits where the text "
    "has no place for it. Please write the text part yourself."
)
MSG_CSS_TAGS = N_("The CSS may not contain template tags.")
MSG_LAYOUT = N_("The layout %(name)s does not exist.")


@dataclass(frozen=True)
class TemplateSource:
    subject: str
    html: str  # the body; wrapped into the layout unless layout is None
    text: str | None = None  # hand-written text part; generated from the HTML when None
    layout: str | None = "default"  # a LAYOUTS key; None: html is a full document
    css: str = ""  # extra CSS the marketer wrote; inlined with the layout's
    variables: frozenset[str] = frozenset()  # names beyond CONTEXT_VARIABLES (built-ins)


@dataclass(frozen=True)
class RenderedMail:
    subject: str
    html: str
    text: str


class TemplateError(UserFacingError):
    """A template cannot be used; the message names the problem (variable, line)."""

    def __init__(self, message: str, *, part: str | None = None, **params: Any) -> None:
        super().__init__(message, **params)
        self.part = part  # "subject", "html", "text" or "css": the field an editor highlights
        self.line: int | None = params.get("line")


class _MissingValue(UndefinedError):
    """StrictUndefined's error, carrying the missing name for a readable message."""

    def __init__(self, message: str | None = None, *, name: str | None, owned: bool) -> None:
        super().__init__(message)
        self.name = name
        self.owned = owned  # True: an attribute or key of a value (contact.nickname)


class _Undefined(StrictUndefined):
    __slots__ = ()

    def __init__(
        self,
        hint: str | None = None,
        obj: Any = missing,
        name: str | None = None,
        exc: type[Exception] = UndefinedError,
    ) -> None:
        if exc is UndefinedError:  # the sandbox passes SecurityError for unsafe attributes
            exc = partial(_MissingValue, name=name, owned=obj is not missing)  # type: ignore[assignment]
        super().__init__(hint, obj, name, exc)  # type: ignore[arg-type]


def _environment(html: bool) -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        autoescape=html,
        undefined=_Undefined,
        finalize=lambda value: "" if value is None else value,
        cache_size=0,
    )
    # lipsum, cycler, joiner, namespace and dict are no use in a mail, and lipsum's and
    # cycler's __globals__ were the classic way out of a sandbox; range is capped by it.
    env.globals = {"range": env.globals["range"]}
    return env


_HTML_ENV = _environment(html=True)
_TEXT_ENV = _environment(html=False)


class CompiledTemplate:
    """One template version, ready to render per recipient: Jinja only, no HTML processing."""

    __slots__ = ("_html", "_sources", "_subject", "_text")

    def __init__(
        self,
        subject: JinjaTemplate,
        html: JinjaTemplate,
        text: JinjaTemplate,
        sources: tuple[str, str, str, str],
    ) -> None:
        self._subject, self._html, self._text = subject, html, text
        self._sources = sources  # subject, body as written, inlined html, text

    @property
    def html_source(self) -> str:
        """The inlined HTML template (Jinja source) every recipient's HTML is rendered from."""
        return self._sources[2]

    @property
    def text_source(self) -> str:
        """The text template, hand-written or generated from the HTML."""
        return self._sources[3]

    def render(self, context: Mapping[str, Any]) -> RenderedMail:
        """Personalise for one recipient; raise TemplateError when a value is missing."""
        try:
            subject = self._subject.render(context)
        except Exception as exc:
            raise _explain(exc, "subject", self._sources[0], _TEXT_ENV) from exc
        # One line: a newline from contact data must never reach the header.
        subject = " ".join(subject.split())
        context = {**context, "subject": subject}
        try:
            html = self._html.render(context)
        except Exception as exc:
            raise self._diagnose_html(exc, context) from exc
        try:
            text = self._text.render(context)
        except Exception as exc:
            raise _explain(exc, "text", self._sources[3], _TEXT_ENV) from exc
        return RenderedMail(subject, html, _BLANK_LINES.sub("\n\n", text).strip() + "\n")

    def _diagnose_html(self, exc: Exception, context: Mapping[str, Any]) -> TemplateError:
        # Line numbers of the inlined document mean nothing to the author: render the body as
        # written to find the line. If the body renders, the layout lacks a value (no line).
        try:
            _build(_HTML_ENV, _HTML_ENV.parse(self._sources[1]), "body").render(context)
        except Exception as body_exc:
            return _explain(body_exc, "html", self._sources[1], _HTML_ENV)
        return _explain(exc, "html", None, _HTML_ENV)


def compile_template(source: TemplateSource) -> CompiledTemplate:
    """Check a template, inline its CSS and derive its text part once; raise TemplateError."""
    names = frozenset(name.split("(")[0] for name in CONTEXT_VARIABLES) | source.variables
    shown = ", ".join((*CONTEXT_VARIABLES, *sorted(source.variables)))
    subject_tree = _checked(_TEXT_ENV, source.subject, "subject", names, shown)
    _checked(_HTML_ENV, source.html, "html", names, shown)
    if source.text is not None:
        _checked(_TEXT_ENV, source.text, "text", names, shown)
    if JINJA_START.search(source.css):
        raise TemplateError(MSG_CSS_TAGS, part="css")

    protected = protect(_with_layout(source.html, source.layout))
    try:
        inlined = inline_css(protected.html, source.css)
    except Exception as exc:  # lxml, cssutils and cssselect each raise their own kinds
        raise TemplateError(MSG_HTML, part="html", detail=str(exc)) from exc
    if (tag := protected.lost(inlined, expressions=True)) is not None:
        raise TemplateError(MSG_MOVED, part="html", tag=tag)
    html_source = protected.restore(inlined)
    if source.text is None:
        generated = html_to_text(inlined, protected)
        if (tag := protected.lost(generated, expressions=False)) is not None:
            raise TemplateError(MSG_TEXT, part="text", tag=tag)
        text_source = protected.restore(generated)
    else:
        text_source = source.text

    # Checked again as compiled: HTML processing must not have produced anything new.
    html_tree = _checked(_HTML_ENV, html_source, "html", names, shown)
    text_tree = _checked(_TEXT_ENV, text_source, "text", names, shown)
    return CompiledTemplate(
        _build(_TEXT_ENV, subject_tree, "subject"),
        _build(_HTML_ENV, html_tree, "html"),
        _build(_TEXT_ENV, text_tree, "text"),
        (source.subject, source.html, html_source, text_source),
    )


def check_template(source: TemplateSource, context: Mapping[str, Any]) -> RenderedMail:
    """Compile and render once with the given (sample) context; raise TemplateError on any problem.

    Used at save and preview time.
    """
    return compile_template(source).render(context)


class TemplateCache:
    """Thread-safe LRU of compiled templates, keyed by e.g. the template version id."""

    def __init__(self, maxsize: int = 256) -> None:
        self._maxsize = maxsize
        self._items: OrderedDict[Hashable, CompiledTemplate] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[Hashable, threading.Lock] = {}

    def get(self, key: Hashable, load: Callable[[], TemplateSource]) -> CompiledTemplate:
        """The compiled template for ``key``, compiling ``load()`` on a miss."""
        with self._lock:
            if (hit := self._hit(key)) is not None:
                return hit
            key_lock = self._loading.setdefault(key, threading.Lock())
        # Workers missing the same key wait for one compilation instead of each paying for it.
        with key_lock:
            with self._lock:
                if (hit := self._hit(key)) is not None:
                    return hit
            try:
                compiled = compile_template(load())
            except BaseException:
                with self._lock:
                    self._loading.pop(key, None)
                raise
            # Stored and no longer in flight in one step: nobody can start a second compile.
            with self._lock:
                self._items[key] = compiled
                self._loading.pop(key, None)
                while len(self._items) > self._maxsize:
                    self._items.popitem(last=False)
            return compiled

    def _hit(self, key: Hashable) -> CompiledTemplate | None:
        compiled = self._items.get(key)
        if compiled is not None:
            self._items.move_to_end(key)
        return compiled


def sample_context(
    *, lang: str = "de", imprint: Sequence[str] = Settings.sender_imprint
) -> dict[str, Any]:
    """Plain sample data for previews: a 'Dr. Anna Müller' contact, salutation and urls."""
    de = lang == "de"
    base = "https://example.com"
    return {
        "lang": lang,
        "contact": {
            "email": "anna.mueller@example.com",
            "title": "Dr.",
            "first_name": "Anna",
            "last_name": "Müller",
            "name": "Dr. Anna Müller",
            "company": "Beispiel GmbH",
            "phone": "+49 30 1234567",
        },
        "salutation": "Sehr geehrte Frau Dr. Müller" if de else "Dear Dr Müller",
        "sender": {
            "name": imprint[0] if imprint else "",
            "address": "news@example.com",
            "imprint": list(imprint),
        },
        "preheader": "",
        "unsubscribe_url": lambda: f"{base}/u/sample",
        "preferences_url": lambda: f"{base}/p/sample",
        "track_link": lambda url: url,
        # The built-in system mails' own variables.
        "confirm_url": f"{base}/confirm/sample",
        "expires_days": 7,
        "topic": "Newsletter",
        "lapse_date": "12. März 2027" if de else "March 12, 2027",
        "recipient": {"name": "Max Berger"},
        "lead_url": f"{base}/leads/1",
        "lead": {
            "reason": "Klick auf „Angebot ansehen“" if de else "Clicked “View offer”",
            "when": "03.06.2025 14:12" if de else "2025-06-03 14:12",
            "campaign": "Win-back 2025",
            "channels": ["email", "phone"],
            "score": 72,
        },
    }


@cache
def load_builtin(name: str) -> TemplateSource:
    """A built-in system mail from templates/mail/builtin/<name>/ (no unsubscribe footer)."""
    if name not in BUILTINS:
        raise LookupError(f"no built-in mail {name!r}; known: {', '.join(BUILTINS)}")
    folder = TEMPLATE_DIR / "builtin" / name
    text = folder / "body.txt"
    return TemplateSource(
        subject=(folder / "subject.txt").read_text(encoding="utf-8"),
        html=(folder / "body.html").read_text(encoding="utf-8"),
        text=text.read_text(encoding="utf-8") if text.exists() else None,
        layout="system",
        variables=frozenset(BUILTINS[name]),
    )


@cache
def _layout(name: str) -> str:
    return (TEMPLATE_DIR / LAYOUTS[name]).read_text(encoding="utf-8")


def _with_layout(body: str, layout: str | None) -> str:
    if layout is None:
        return body
    if layout not in LAYOUTS:
        raise TemplateError(MSG_LAYOUT, part="html", name=layout)
    return _layout(layout).replace(BODY_MARKER, body, 1)


def _checked(
    env: ImmutableSandboxedEnvironment, source: str, part: str, names: frozenset[str], shown: str
) -> nodes.Template:
    """Parse and statically check: only known names, nothing internal, no loading."""
    try:
        tree = env.parse(source, name=part)
    except TemplateSyntaxError as exc:
        raise TemplateError(MSG_SYNTAX, part=part, line=exc.lineno, detail=exc.message) from None
    own = {n.name for n in tree.find_all(nodes.Name) if n.ctx in ("store", "param")}
    own.update(macro.name for macro in tree.find_all(nodes.Macro))
    for node in walk(tree):
        line = node.lineno
        if type(node) in _LOADERS:
            raise TemplateError(MSG_LOADS, part=part, tag=_LOADERS[type(node)], line=line)
        if (internal := internal_name(node)) is not None:
            raise TemplateError(MSG_INTERNAL, part=part, name=internal, line=line)
        # Jinja finds these only when compiling the inlined document, with its line numbers.
        if isinstance(node, nodes.Filter | nodes.Test) and node.name not in (
            env.filters if isinstance(node, nodes.Filter) else env.tests
        ):
            kind = "filter" if isinstance(node, nodes.Filter) else "test"
            detail = f"No {kind} named {node.name!r}."
            raise TemplateError(MSG_SYNTAX, part=part, line=line, detail=detail)
        if (
            isinstance(node, nodes.Name)
            and node.ctx == "load"
            and node.name not in names | own | _ALWAYS
        ):
            raise TemplateError(MSG_UNKNOWN, part=part, name=node.name, line=line, available=shown)
    return tree


def _build(env: ImmutableSandboxedEnvironment, tree: nodes.Template, part: str) -> JinjaTemplate:
    try:
        code = env.compile(tree, name=part, filename=f"<{part}>")
    except TemplateSyntaxError as exc:  # e.g. an unknown filter, found while compiling
        raise TemplateError(MSG_SYNTAX, part=part, line=exc.lineno, detail=exc.message) from None
    return env.template_class.from_code(env, code, env.make_globals(None), None)


def _explain(
    exc: Exception, part: str, source: str | None, env: ImmutableSandboxedEnvironment
) -> TemplateError:
    """A render failure as a TemplateError; ``source`` gives line numbers when known."""
    line = template_line(exc.__traceback__, _PART_FILES) if source is not None else None
    if isinstance(exc, _MissingValue):
        name = _missing_path(exc, source, env, line)
        message = MSG_UNDEFINED_LINE if line else MSG_UNDEFINED
        return TemplateError(message, part=part, name=name, line=line)
    if isinstance(exc, SecurityError):
        return TemplateError(MSG_FORBIDDEN, part=part, detail=str(exc), line=line)
    return TemplateError(MSG_FAILED, part=part, detail=str(exc), line=line)


def _missing_path(
    exc: _MissingValue, source: str | None, env: ImmutableSandboxedEnvironment, line: int | None
) -> str:
    """ "contact.nickname" rather than "nickname": the expression on the failing line."""
    name = str(exc.name)
    if not exc.owned or source is None or line is None:
        return name
    return expression_at(env.parse(source), line, name) or name
