"""Work done once per template version: protect Jinja tags, inline CSS, derive the text part.

lxml and premailer treat a template as HTML; they would URL-encode ``{{ … }}`` inside href
attributes and could move or drop tags. So every Jinja construct is first replaced by an opaque
lowercase token (``nj3f9a1c00007x``) that survives any HTML position, and put back afterwards;
the result is checked so a tag that HTML processing lost or moved is an error, never a silently
different template. The static inspection of Jinja's AST lives here too; render.py turns its
findings into messages.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType

import lxml.html
from inscriptis import Inscriptis
from inscriptis.css_profiles import CSS_PROFILES
from inscriptis.model.config import ParserConfig
from jinja2 import nodes
from lxml.html import HtmlElement
from premailer import Premailer

JINJA_START = re.compile(r"\{[{%#]")
_RAW_BLOCK = re.compile(r"\{%[-+]?\s*raw\s*[-+]?%\}.*?\{%[-+]?\s*endraw\s*[-+]?%\}", re.S)
_CLOSING = {"{": "}}", "%": "%}"}
_HIDDEN_STYLE = re.compile(r"display\s*:\s*none", re.I)
_NOT_SHOWN = frozenset({"head", "title", "style", "script", "template"})
# Filters and tests that take attribute names as strings: map(attribute='__class__').
_ATTRIBUTE_FILTERS = frozenset(
    {"attr", "map", "sort", "groupby", "sum", "selectattr", "rejectattr", "unique", "min", "max"}
)
_TABLE_PARTS = ("table", "tbody", "thead", "tfoot", "tr", "caption")
# The strict profile: the relaxed one indents every <div> and pads every <span>. Links are
# written out by _annotate_links as "label (url)", which reads better than markdown.
_TEXT_CONFIG = ParserConfig(css=CSS_PROFILES["strict"].copy(), display_links=False)


@dataclass(frozen=True)
class Protected:
    """HTML whose Jinja constructs are replaced by tokens ``<prefix><index:05d>x``."""

    html: str
    tags: tuple[str, ...]  # tags[i] is the Jinja source token i stands for
    prefix: str

    @property
    def pattern(self) -> re.Pattern[str]:
        return re.compile(self.prefix + r"(\d{5})x")

    def found(self, processed: str) -> list[int]:
        """Indexes of the tokens in ``processed``, in document order."""
        return [int(match[1]) for match in self.pattern.finditer(processed)]

    def block_tokens(self, processed: str) -> str:
        """The block-tag tokens in ``processed``, in order (they render to nothing)."""
        return "".join(
            match[0]
            for match in self.pattern.finditer(processed)
            if self.tags[int(match[1])].startswith("{%")
        )

    def lost(self, processed: str, *, expressions: bool) -> str | None:
        """The first tag that processing lost, duplicated or reordered; None when all is well.

        Block tags ({% … %}) must each appear once and in order, or the template's structure
        changes. Expressions may be dropped from the text part (hidden or head content) and may
        be duplicated (premailer copies a width into an attribute), but not lost from the HTML.
        """
        found = self.found(processed)
        blocks = [i for i, tag in enumerate(self.tags) if tag.startswith("{%")]
        seen = [i for i in found if self.tags[i].startswith("{%")]
        if seen != blocks:
            for wanted, got in zip(blocks, seen, strict=False):
                if wanted != got:
                    return self.tags[wanted]
            return self.tags[blocks[len(seen)] if len(blocks) > len(seen) else seen[len(blocks)]]
        if expressions:
            present = set(found)
            for i, tag in enumerate(self.tags):
                if tag.startswith("{{") and i not in present:
                    return tag
        return None

    def restore(self, processed: str) -> str:
        """Put the Jinja source back; braces that HTML processing produced stay literal text."""
        # An entity like &#123;&#123; decodes to "{{"; left alone it would become a tag the
        # checks never saw. A literal "{" right before a restored tag would do the same.
        escaped = re.sub(r"\{(?=[{%#]|" + self.prefix + ")", "{{ '{' }}", processed)
        return self.pattern.sub(lambda match: self.tags[int(match[1])], escaped)


def protect(source: str) -> Protected:
    """Replace every ``{{ … }}``, ``{% … %}`` and raw block by a unique token; drop comments."""
    prefix = "nj" + secrets.token_hex(3)
    while prefix in source.lower():  # the template's own text happens to contain it
        prefix = "nj" + secrets.token_hex(3)
    tags: list[str] = []
    out: list[str] = []
    pos = 0
    while (match := JINJA_START.search(source, pos)) is not None:
        start = match.start()
        raw = _RAW_BLOCK.match(source, start)
        end = raw.end() if raw else _tag_end(source, start)
        out.append(source[pos:start])
        # A comment renders nothing, and as text inside <head> it would make the parser open
        # <body> early, moving the <style> with it.
        if source[start + 1] != "#":
            out.append(f"{prefix}{len(tags):05d}x")
            tags.append(source[start:end])
        pos = end
    out.append(source[pos:])
    return Protected("".join(out), tuple(tags), prefix)


def _tag_end(source: str, start: int) -> int:
    """Index after the tag at ``start``; like Jinja's lexer, skips strings and nested brackets."""
    kind = source[start + 1]
    if kind == "#":
        end = source.find("#}", start + 2)
        return len(source) if end < 0 else end + 2
    closing = _CLOSING[kind]
    quote: str | None = None
    depth = 0
    i = start + 2
    while i < len(source):
        char = source[i]
        if quote:
            if char == "\\":
                i += 1
            elif char == quote:
                quote = None
        elif char in "'\"":
            quote = char
        elif depth == 0 and source.startswith(closing, i):
            return i + 2
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth = max(0, depth - 1)
        i += 1
    return len(source)


def inline_css(html: str, css: str = "") -> str:
    """Move the document's <style> rules and ``css`` into style attributes (no network)."""
    premailer = Premailer(
        html,
        css_text=[css] if css.strip() else None,
        disable_validation=True,
        allow_network=False,
        allow_loading_external_files=False,
        disable_link_rewrites=True,
        remove_classes=False,
        # Rules that cannot be inlined (@media, :hover) stay in a <style> block; they need
        # their !important to beat the inline styles.
        keep_style_tags=False,
        strip_important=False,
        cssutils_logging_level=logging.CRITICAL,
    )
    return premailer.transform(pretty_print=False)


def html_to_text(html: str, protected: Protected) -> str:
    """The text part of a token-protected HTML mail, with link targets written out."""
    tree = lxml.html.document_fromstring(html)
    _keep_hidden_blocks(tree, protected)
    shown_hrefs = _annotate_links(tree, protected.restore)
    _keep_attribute_blocks(tree, protected, shown_hrefs)
    _linearise_tables(tree)
    # Inscriptis reads padding and margins from inline styles as indentation; a text mail is
    # laid out by its tags alone.
    for element in tree.xpath("//*[@style]"):
        del element.attrib["style"]
    text = Inscriptis(tree, _TEXT_CONFIG).get_text()
    out: list[str] = []
    for line in text.splitlines():
        line = line.rstrip()
        # A line holding only block tags ({% if %}) would leave an empty line in every mail:
        # join it to the next line, as Jinja's trim_blocks would (but only for such lines).
        if line and not protected.pattern.sub("", line).strip() and _only_blocks(line, protected):
            out.append(line.strip())
        else:
            out.append(line + "\n")
    return "".join(out).strip() + "\n"


def _only_blocks(line: str, protected: Protected) -> bool:
    return all(protected.tags[i].startswith("{%") for i in protected.found(line))


def _keep_hidden_blocks(tree: HtmlElement, protected: Protected) -> None:
    """Drop what the text part does not show, keeping its block tags so {% if %} stays paired."""
    body = tree.find("body")
    for element in list(tree.iter()):
        if not isinstance(element.tag, str) or not _attached(element, tree):
            continue
        if element.tag not in _NOT_SHOWN and not _HIDDEN_STYLE.search(element.get("style") or ""):
            continue
        markup = lxml.html.tostring(element, encoding="unicode", with_tail=False)
        tokens = protected.block_tokens(markup)
        if tokens and element.tag == "head" and body is not None:
            body.text = tokens + (body.text or "")
        elif tokens:
            _put_text_before(element, tokens)
        element.drop_tree()


def _attached(element: HtmlElement, root: HtmlElement) -> bool:
    """False for elements inside a subtree that was already dropped."""
    return element is not root and any(a is root for a in element.iterancestors())


def _annotate_links(tree: HtmlElement, resolve: Callable[[str], str]) -> set[HtmlElement]:
    """Write each link's target after its label, "Abmelden (https://…)"; return those anchors."""
    shown: set[HtmlElement] = set()
    for anchor in tree.iter("a"):
        href = (anchor.get("href") or "").strip()
        if not href or href.startswith("#"):
            continue
        target = href[7:].split("?")[0] if href.startswith("mailto:") else href
        label = anchor.text_content().strip()
        if resolve(label) in (resolve(target), resolve(href)):
            continue
        anchor.tail = f" ({target})" + (anchor.tail or "")
        shown.add(anchor)
    return shown


def _keep_attribute_blocks(
    tree: HtmlElement, protected: Protected, shown_hrefs: set[HtmlElement]
) -> None:
    """Block tags inside attributes (class="{% if … %}") are no text; keep them before it."""
    for element in tree.iter():
        if not isinstance(element.tag, str) or element.getparent() is None:
            continue
        parts = [
            f"{name} {value}"
            for name, value in element.attrib.items()
            if not (name == "href" and element in shown_hrefs)
        ]
        tokens = protected.block_tokens(" ".join(parts))
        if tokens:
            _put_text_before(element, tokens)


def _put_text_before(element: HtmlElement, text: str) -> None:
    previous = element.getprevious()
    if previous is not None:
        previous.tail = (previous.tail or "") + text
    else:
        parent = element.getparent()
        parent.text = (parent.text or "") + text


def _linearise_tables(tree: HtmlElement) -> None:
    """Rows become lines and cells run inline ("Anlass: Klick …"), as mail readers expect.

    Mail tables are mostly layout; Inscriptis would align columns by the width of the tokens,
    not of the rendered values, and would move text between rows (a {% for %} around <tr>) in
    front of the table, breaking the loop.
    """
    for element in list(tree.iter(*_TABLE_PARTS, "td", "th")):
        if element.tag in ("td", "th"):
            # Every cell ends with a gap, also those repeated by a loop; line ends are trimmed.
            following = element.getnext()
            label = element.tag == "th" and following is not None and following.tag == "td"
            element.tail = (": " if label else "  ") + (element.tail or "").strip()
            element.tag = "span"
        else:
            element.tag = "div"


# -- Static inspection of Jinja source ---------------------------------------------------------


def walk(node: nodes.Node) -> Iterator[nodes.Node]:
    """Nodes in source order (pre-order), so the first problem reported is the first written."""
    yield node
    for child in node.iter_child_nodes():
        yield from walk(child)


def internal_name(node: nodes.Node) -> str | None:
    """The internal attribute a node reaches for ('__class__', '_secret'), or None."""
    if isinstance(node, nodes.Getattr) and node.attr.startswith("_"):
        return node.attr
    if isinstance(node, nodes.Getitem) and _is_private(node.arg):
        return str(node.arg.value)  # type: ignore[attr-defined]
    if isinstance(node, nodes.Filter | nodes.Test) and node.name in _ATTRIBUTE_FILTERS:
        for arg in (*node.args, *(keyword.value for keyword in node.kwargs)):
            if _is_private(arg):
                return str(arg.value)  # type: ignore[attr-defined]
    return None


def _is_private(node: nodes.Node) -> bool:
    """A constant attribute name like '__class__' or 'a._b'."""
    return (
        isinstance(node, nodes.Const)
        and isinstance(node.value, str)
        and any(part.startswith("_") for part in node.value.split("."))
    )


def expression_at(tree: nodes.Template, line: int, key: str) -> str | None:
    """The written form ("contact.nickname") of the lookup of ``key`` on ``line``, if any."""
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        if node.lineno == line and _key(node) == key and (path := _dotted(node)):
            return path
    return None


def _key(node: nodes.Getattr | nodes.Getitem) -> object:
    return node.attr if isinstance(node, nodes.Getattr) else getattr(node.arg, "value", None)


def _dotted(node: nodes.Node) -> str | None:
    if isinstance(node, nodes.Name):
        return node.name
    if isinstance(node, nodes.Call):
        inner = _dotted(node.node)
        return f"{inner}()" if inner else None
    if isinstance(node, nodes.Getattr | nodes.Getitem):
        inner, key = _dotted(node.node), _key(node)
        if inner is None or key is None:
            return None
        return f"{inner}.{key}" if isinstance(key, str) else f"{inner}[{key!r}]"
    return None


def template_line(tb: TracebackType | None, filenames: frozenset[str]) -> int | None:
    """The line of the innermost frame of one of ``filenames`` (Jinja rewrites tracebacks so)."""
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename in filenames:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line
