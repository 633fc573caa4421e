"""Narrative.div checks: txt-1 (only basic, script-free XHTML) and txt-2 (some content).

Clients render ``Narrative.div`` in browsers, so a narrative is stored HTML written by
someone else: the R4 rules (https://hl7.org/fhir/R4/narrative.html#rules) restrict it to
"the basic html formatting elements and attributes described in chapters 7-11 (except
section 4 of chapter 9) and 15 of the HTML 4.0 standard, <a> elements (either name or
href), images and internally contained style attributes" (txt-1), with "some
non-whitespace content" (txt-2), and the div is XHTML (https://hl7.org/fhir/R4/datatypes.html#xhtml).

Sources of the allow-lists: ``HTML_ELEMENTS``, ``HTML_ATTRIBUTES`` and ``HTML_COMBO_LIST``
of the HL7 Java validator (hapifhir/org.hl7.fhir.core,
``org.hl7.fhir.validation/.../instance/type/XhtmlValidator.java``), which HAPI also runs.
So ``ins``/``del`` (chapter 9 section 4) and ``u``/``s``/``strike``/``font``/``center``
are refused, as there. ``xml:space``, only a hint there, is accepted here.

Beyond the name lists, what a browser would execute is refused whatever the lists say:
``on*`` event-handler attributes, ``javascript:``/``vbscript:``/``data:`` URLs (``data:image/``
stays allowed in ``img src``, the usual way to embed a picture) and script in ``style``.
URLs and styles are compared after removing whitespace and control characters and
lower-casing, because browsers ignore those (``java&#9;script:`` runs as ``javascript:``).

Parsing uses expat, which is linear and never fetches anything; a DOCTYPE is refused as
soon as it starts, before any entity in it is declared or expanded (billion laughs,
external entities), so only the five XML entities and character references exist:
``&nbsp;`` is an error, as XHTML requires. Work is bounded by ``MAX_ELEMENTS`` and
``MAX_DEPTH``, and at most ``MAX_PROBLEMS`` distinct messages are reported.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from xml.parsers import expat

XHTML_NS = "http://www.w3.org/1999/xhtml"
XML_NS = "http://www.w3.org/XML/1998/namespace"
MAX_ELEMENTS = 100_000
MAX_DEPTH = 200
MAX_PROBLEMS = 10

ALLOWED_ELEMENTS: frozenset[str] = frozenset(
    {
        *("p", "br", "div", "h1", "h2", "h3", "h4", "h5", "h6", "a", "span", "b", "em", "i", "strong"),
        *("small", "big", "tt", "dfn", "q", "var", "abbr", "acronym", "cite", "blockquote", "hr", "address"),
        *("bdo", "kbd", "sub", "sup", "ul", "ol", "li", "dl", "dt", "dd", "pre", "code", "samp"),
        *("table", "caption", "colgroup", "col", "thead", "tr", "tfoot", "tbody", "th", "td"),
        *("img", "map", "area"),
    }
)
"""Elements txt-1 allows (the Java validator's ``HTML_ELEMENTS``)."""

GLOBAL_ATTRIBUTES: frozenset[str] = frozenset(
    {
        *("title", "style", "class", "id", "lang", "xml:lang", "xml:space", "dir", "accesskey", "tabindex"),
        *("span", "width", "align", "valign", "char", "charoff", "abbr", "axis", "headers", "scope"),
        *("rowspan", "colspan"),
    }
)
"""Attributes allowed on every element (``HTML_ATTRIBUTES``, plus ``xml:space``)."""

ELEMENT_ATTRIBUTES: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        "a": frozenset({"href", "name", "charset", "type", "hreflang", "rel", "rev", "shape", "coords"}),
        "img": frozenset({"src", "alt", "longdesc", "height", "width", "usemap", "ismap", "border"}),
        "map": frozenset({"name"}),
        "area": frozenset({"shape", "coords", "href", "nohref", "alt"}),
        "table": frozenset({"summary", "width", "border", "frame", "rules", "cellspacing", "cellpadding"}),
        "blockquote": frozenset({"cite"}),
        "q": frozenset({"cite"}),
        "pre": frozenset({"space"}),
        "td": frozenset({"nowrap"}),
    }
)
"""Further attributes allowed on one element (``HTML_COMBO_LIST``)."""

URL_ATTRIBUTES: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        "a": frozenset({"href"}),
        "area": frozenset({"href"}),
        "img": frozenset({"src", "longdesc", "usemap"}),
        "blockquote": frozenset({"cite"}),
        "q": frozenset({"cite"}),
    }
)
"""Allowed attributes whose value a browser follows as a URL."""

_SCRIPT_SCHEMES = frozenset({"javascript", "vbscript"})
_CSS_SCRIPT_MARKERS = ("expression(", "javascript:", "vbscript:", "behavior:", "-moz-binding", "\\")
_INVISIBLE: dict[int, None] = {code: None for code in (*range(0x21), 0x7F)}
"""``str.translate`` table deleting ASCII whitespace and control characters."""
_UNDEFINED_ENTITY = expat.errors.codes[expat.errors.XML_ERROR_UNDEFINED_ENTITY]


def narrative_problems(div: str) -> list[str]:
    """Human-readable problems with a Narrative.div; empty when it is acceptable."""
    return _NarrativeCheck().run(div)


class _Stop(Exception):
    """Aborts the parse from inside a handler; ``message`` is the last problem, if any."""

    def __init__(self, message: str | None) -> None:
        super().__init__(message)
        self.message = message


class _NarrativeCheck:
    """State of one check: expat calls the handlers below while it parses the div."""

    __slots__ = ("depth", "elements", "has_content", "problems", "root_namespace")

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.elements = 0
        self.depth = 0
        self.has_content = False
        self.root_namespace: str | None = None

    def run(self, div: str) -> list[str]:
        parser = expat.ParserCreate(namespace_separator=" ")
        parser.namespace_prefixes = True
        parser.buffer_text = True
        parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
        parser.StartDoctypeDeclHandler = self._refuse_declarations
        parser.EntityDeclHandler = self._refuse_declarations
        parser.ExternalEntityRefHandler = self._refuse_external_entity
        parser.ProcessingInstructionHandler = self._processing_instruction
        parser.StartElementHandler = self._start_element
        parser.EndElementHandler = self._end_element
        parser.CharacterDataHandler = self._text
        try:
            parser.Parse(div, True)
        except _Stop as stop:
            if stop.message is not None:
                self._add(stop.message)
            return self.problems
        except expat.ExpatError as error:
            self._add(_syntax_message(error))
            return self.problems
        except UnicodeEncodeError:
            self._add("the narrative contains unpaired surrogate characters, which are not valid Unicode")
            return self.problems
        if not self.has_content:
            self._add("the narrative must have some non-whitespace content (txt-2)")
        return self.problems

    def _add(self, message: str) -> None:
        if message not in self.problems and len(self.problems) < MAX_PROBLEMS:
            self.problems.append(message)

    def _report(self, message: str) -> None:
        self._add(message)
        if len(self.problems) >= MAX_PROBLEMS:
            raise _Stop(None)

    def _refuse_declarations(self, *_: object) -> None:
        raise _Stop("DOCTYPE and ENTITY declarations are not allowed in narrative")

    def _refuse_external_entity(self, *_: object) -> int:
        """Unreachable while DOCTYPEs are refused; kept so no future change can fetch anything."""
        raise _Stop("DOCTYPE and ENTITY declarations are not allowed in narrative")

    def _processing_instruction(self, target: str, _data: str) -> None:
        self._report(f"processing instruction <?{target}?> is not allowed in narrative (txt-1)")

    def _start_element(self, name: str, attributes: dict[str, str]) -> None:
        self.elements += 1
        self.depth += 1
        if self.elements > MAX_ELEMENTS:
            raise _Stop(f"the narrative has more than {MAX_ELEMENTS} elements")
        if self.depth > MAX_DEPTH:
            raise _Stop(f"the narrative nests elements deeper than {MAX_DEPTH} levels")
        namespace, local, shown = _split(name)
        if self.elements == 1:
            self.root_namespace = namespace
            if local != "div":
                self._report(f"the root element must be a <div> in the XHTML namespace, not <{shown}>")
            elif namespace != XHTML_NS:
                self._report(f'the root element must be a <div> in the XHTML namespace: add xmlns="{XHTML_NS}"')
        elif namespace not in (XHTML_NS, self.root_namespace):
            self._report(f"element <{shown}> must be in the XHTML namespace (txt-1)")
        if local not in ALLOWED_ELEMENTS:
            self._report(f"element <{shown}> is not allowed in narrative (txt-1)")
        elif local == "img":
            self.has_content = True
        for attribute, value in attributes.items():
            self._check_attribute(local, attribute, value)

    def _end_element(self, _name: str) -> None:
        self.depth -= 1

    def _text(self, data: str) -> None:
        if not self.has_content and data.strip():
            self.has_content = True

    def _check_attribute(self, element: str, name: str, value: str) -> None:
        namespace, local, shown = _split(name)
        if local[:2].lower() == "on":
            self._report(f"attribute '{shown}' is not allowed (txt-1): event handlers run script")
            return
        key = local if namespace is None else f"xml:{local}" if namespace == XML_NS else None
        if key is None or (key not in GLOBAL_ATTRIBUTES and key not in ELEMENT_ATTRIBUTES.get(element, ())):
            self._report(f"attribute '{shown}' is not allowed on <{element}> (txt-1)")
        elif key in URL_ATTRIBUTES.get(element, ()):
            problem = _url_problem(element, key, value)
            if problem is not None:
                self._report(problem)
        elif key == "style":
            compact = value.translate(_INVISIBLE).lower()
            if any(marker in compact for marker in _CSS_SCRIPT_MARKERS):
                self._report("attribute 'style' must not contain script, behaviours or CSS escapes (txt-1)")


def _split(name: str) -> tuple[str | None, str, str]:
    """Expat's ``uri local prefix`` name as (namespace, local name, name as written)."""
    parts = name.split(" ")
    if len(parts) == 1:
        return None, name, name
    if len(parts) == 2:
        return parts[0], parts[1], parts[1]
    return parts[0], parts[1], f"{parts[2]}:{parts[1]}"


def _url_problem(element: str, attribute: str, value: str) -> str | None:
    """Why a URL would run script or smuggle content, or None when it is harmless."""
    compact = value.translate(_INVISIBLE).lower()
    scheme, colon, _ = compact.partition(":")
    if not colon:
        return None
    if scheme in _SCRIPT_SCHEMES:
        return f"{scheme}: URLs are not allowed in {attribute} (txt-1)"
    if scheme == "data":
        if element == "img" and attribute == "src":
            return None if compact.startswith("data:image/") else "only data:image/ URLs are allowed in img src (txt-1)"
        return f"data: URLs are not allowed in {attribute} (txt-1)"
    return None


def _syntax_message(error: expat.ExpatError) -> str:
    where = f"line {error.lineno}, column {error.offset + 1}"
    if error.code == _UNDEFINED_ENTITY:
        return (
            f"the narrative is not well-formed XHTML: undefined entity at {where}"
            " (HTML named entities such as &nbsp; are not XML: use a character reference such as &#160;)"
        )
    return f"the narrative is not well-formed XHTML: {expat.ErrorString(error.code)} at {where}"
