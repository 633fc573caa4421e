"""Narrative.div follows txt-1 and txt-2 (hl7.org/fhir/R4/narrative.html#rules)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from app.validation.narrative import MAX_DEPTH, MAX_ELEMENTS, MAX_PROBLEMS, narrative_problems
from tests.examples import EXAMPLES

NS = 'xmlns="http://www.w3.org/1999/xhtml"'


def div(body: str, attributes: str = "") -> str:
    return f"<div {NS}{attributes}>{body}</div>"


def narratives(node: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """(path, div) for every ``div`` of a ``text`` object, in contained resources and bundle entries too."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "text" and isinstance(value, dict) and isinstance(value.get("div"), str):
                yield f"{path}.text.div", value["div"]
            yield from narratives(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from narratives(item, f"{path}[{index}]")


EXAMPLE_FILES = sorted(p.name for p in EXAMPLES.glob("*.json"))


@pytest.mark.parametrize("name", EXAMPLE_FILES)
def test_every_official_example_narrative_is_accepted(name: str) -> None:
    found = list(narratives(json.loads((EXAMPLES / name).read_text())))
    refused = {path: narrative_problems(text) for path, text in found}
    assert {path: problems for path, problems in refused.items() if problems} == {}


def test_official_examples_hold_hundreds_of_narratives() -> None:
    count = sum(len(list(narratives(json.loads((EXAMPLES / n).read_text())))) for n in EXAMPLE_FILES)
    assert len(EXAMPLE_FILES) == 365
    assert count > 700


def test_simple_narrative_is_accepted() -> None:
    assert narrative_problems(div("<p>Plan for <b>Peter</b>: <a href='https://example.org/p'>details</a></p>")) == []


def test_script_element_is_refused() -> None:
    assert "element <script> is not allowed in narrative (txt-1)" in narrative_problems(
        div("<p>hi</p><script>alert(1)</script>")
    )


@pytest.mark.parametrize(
    "element",
    ["iframe", "form", "style", "input", "object", "embed", "base", "link", "meta", "SCRIPT", "ins", "font"],
)
def test_elements_outside_the_allow_list_are_refused(element: str) -> None:
    assert narrative_problems(div(f"<p>x</p><{element}>y</{element}>")) == [
        f"element <{element}> is not allowed in narrative (txt-1)"
    ]


@pytest.mark.parametrize("attribute", ["onclick", "ONCLICK", "onMouseOver", "onerror"])
def test_event_handler_attributes_are_refused_in_any_case(attribute: str) -> None:
    assert narrative_problems(div(f"<p {attribute}='alert(1)'>x</p>")) == [
        f"attribute '{attribute}' is not allowed (txt-1): event handlers run script"
    ]


def test_event_handler_in_a_foreign_namespace_is_refused() -> None:
    problems = narrative_problems(div("<p x:onclick='alert(1)'>x</p>", " xmlns:x='urn:x'"))
    assert problems == ["attribute 'x:onclick' is not allowed (txt-1): event handlers run script"]


@pytest.mark.parametrize(
    "href",
    [
        "javascript:alert(1)",
        "JaVaScRiPt:alert(1)",
        "java&#9;script:alert(1)",
        "java&#x0A;scr&#x0D;ipt:alert(1)",
        " &#10;&#127;javascript:alert(1)",
        "&#106;avascript:alert(1)",
        "javascript&#58;alert(1)",
    ],
)
def test_javascript_url_is_refused_despite_case_and_hidden_whitespace(href: str) -> None:
    assert narrative_problems(div(f'<a href="{href}">click</a>')) == [
        "javascript: URLs are not allowed in href (txt-1)"
    ]


def test_vbscript_url_is_refused() -> None:
    assert narrative_problems(div('<a href="VBScript:msgbox">x</a>')) == [
        "vbscript: URLs are not allowed in href (txt-1)"
    ]


def test_script_url_in_img_src_is_refused() -> None:
    assert narrative_problems(div('<img src="javascript:alert(1)" alt="x"/>')) == [
        "javascript: URLs are not allowed in src (txt-1)"
    ]


def test_data_url_in_href_is_refused() -> None:
    problems = narrative_problems(div('<a href="data:text/html;base64,PHNjcmlwdD4=">x</a>'))
    assert problems == ["data: URLs are not allowed in href (txt-1)"]


def test_data_image_url_in_img_src_is_accepted() -> None:
    assert narrative_problems(div('<img src="data:image/png;base64,iVBORw0KGgo=" alt="logo"/>')) == []


def test_data_url_in_img_src_must_be_an_image() -> None:
    assert narrative_problems(div('<img src="data:text/html,hi" alt="x"/>')) == [
        "only data:image/ URLs are allowed in img src (txt-1)"
    ]


@pytest.mark.parametrize(
    "href", ["https://example.org/a?b=c:d", "mailto:a@example.org", "Patient/example", "#section", "urn:uuid:1"]
)
def test_ordinary_links_are_accepted(href: str) -> None:
    assert narrative_problems(div(f'<a href="{href}">link</a>')) == []


def test_style_attribute_is_accepted() -> None:
    assert narrative_problems(div('<span style="color: gray;">x</span>')) == []


@pytest.mark.parametrize(
    "style", ["width: expression(alert(1))", "background: url(JAVA SCRIPT:alert(1))", "background:u\\72l(x)"]
)
def test_script_in_style_attribute_is_refused(style: str) -> None:
    assert narrative_problems(div(f'<span style="{style}">x</span>')) == [
        "attribute 'style' must not contain script, behaviours or CSS escapes (txt-1)"
    ]


@pytest.mark.parametrize(
    ("markup", "problem"),
    [
        ("<span href='x'>x</span>", "attribute 'href' is not allowed on <span> (txt-1)"),
        ("<p x:href='x' xmlns:x='urn:x'>x</p>", "attribute 'x:href' is not allowed on <p> (txt-1)"),
        ("<ol start='3'><li>x</li></ol>", "attribute 'start' is not allowed on <ol> (txt-1)"),
    ],
)
def test_attributes_outside_the_allow_list_are_refused(markup: str, problem: str) -> None:
    assert narrative_problems(div(markup)) == [problem]


def test_html4_attributes_of_allowed_elements_are_accepted() -> None:
    markup = (
        "<table border='1' cellpadding='2' summary='s'><tr><th scope='col' colspan='2'>h</th></tr>"
        "<tr><td rowspan='1' valign='top' nowrap='nowrap'>c</td></tr></table>"
        "<p xml:lang='en' lang='en' dir='ltr' class='c' id='i' title='t'>x</p>"
        "<blockquote cite='https://example.org'>q</blockquote><a name='anchor'>a</a>"
    )
    assert narrative_problems(div(markup)) == []


def test_missing_xhtml_namespace_is_refused() -> None:
    assert narrative_problems("<div><p>x</p></div>") == [
        'the root element must be a <div> in the XHTML namespace: add xmlns="http://www.w3.org/1999/xhtml"'
    ]


def test_root_other_than_div_is_refused() -> None:
    assert narrative_problems(f"<p {NS}>x</p>") == ["the root element must be a <div> in the XHTML namespace, not <p>"]


def test_prefixed_xhtml_div_is_accepted() -> None:
    assert narrative_problems("<h:div xmlns:h='http://www.w3.org/1999/xhtml'><h:p>x</h:p></h:div>") == []


def test_child_in_a_foreign_namespace_is_refused() -> None:
    problems = narrative_problems(div("<svg:svg xmlns:svg='http://www.w3.org/2000/svg'>x</svg:svg>"))
    assert problems == [
        "element <svg:svg> must be in the XHTML namespace (txt-1)",
        "element <svg:svg> is not allowed in narrative (txt-1)",
    ]


def test_doctype_is_refused() -> None:
    assert narrative_problems(f"<!DOCTYPE div><div {NS}>x</div>") == [
        "DOCTYPE and ENTITY declarations are not allowed in narrative"
    ]


@pytest.mark.alone
def test_billion_laughs_is_refused_fast() -> None:
    entities = "".join(f'<!ENTITY l{i} "{f"&l{i - 1};" * 10}">' for i in range(1, 10))
    payload = f'<!DOCTYPE div [<!ENTITY l0 "lol">{entities}]><div {NS}>&l9;</div>'
    started = time.perf_counter()
    problems = narrative_problems(payload)
    assert time.perf_counter() - started < 0.05
    assert problems == ["DOCTYPE and ENTITY declarations are not allowed in narrative"]


def test_external_entity_is_refused() -> None:
    payload = f'<!DOCTYPE div [<!ENTITY x SYSTEM "file:///etc/passwd">]><div {NS}>&x;</div>'
    assert narrative_problems(payload) == ["DOCTYPE and ENTITY declarations are not allowed in narrative"]


def test_html_named_entity_is_refused_with_a_hint() -> None:
    (problem,) = narrative_problems(div("<p>a&nbsp;b</p>"))
    assert problem.startswith("the narrative is not well-formed XHTML: undefined entity at line 1, column 47")
    assert "&#160;" in problem


def test_xml_entities_and_character_references_are_accepted() -> None:
    assert narrative_problems(div("<p>a&#160;b &amp; c &lt; d &gt; e &quot;&apos; &#x2014;</p>")) == []


def test_malformed_xml_reports_line_and_column() -> None:
    assert narrative_problems(div("<p>x</b>")) == [
        "the narrative is not well-formed XHTML: mismatched tag at line 1, column 49"
    ]


def test_empty_string_is_not_well_formed() -> None:
    assert narrative_problems("") == ["the narrative is not well-formed XHTML: no element found at line 1, column 1"]


def test_processing_instruction_is_refused() -> None:
    assert narrative_problems(div("<?php echo 1; ?><p>x</p>")) == [
        "processing instruction <?php?> is not allowed in narrative (txt-1)"
    ]


@pytest.mark.parametrize(
    "body", ["", "   \n\t ", "<p> </p><br/>", "&#160;", "<!-- only a comment -->", "<p><![CDATA[  ]]></p>"]
)
def test_narrative_without_content_is_refused(body: str) -> None:
    assert narrative_problems(div(body)) == ["the narrative must have some non-whitespace content (txt-2)"]


def test_div_with_only_an_img_is_accepted() -> None:
    assert narrative_problems(div('<img src="chart.png" alt=""/>')) == []


def test_cdata_text_is_content() -> None:
    assert narrative_problems(div("<![CDATA[a < b]]>")) == []


def test_nesting_at_the_depth_limit_is_accepted() -> None:
    inner = MAX_DEPTH - 1
    assert narrative_problems(div("<span>" * inner + "x" + "</span>" * inner)) == []


def test_deep_nesting_is_refused() -> None:
    inner = MAX_DEPTH
    assert narrative_problems(div("<span>" * inner + "x" + "</span>" * inner)) == [
        f"the narrative nests elements deeper than {MAX_DEPTH} levels"
    ]


def test_too_many_elements_are_refused() -> None:
    assert narrative_problems(div("<br/>" * MAX_ELEMENTS + "x")) == [
        f"the narrative has more than {MAX_ELEMENTS} elements"
    ]


@pytest.mark.alone
def test_big_valid_table_is_accepted() -> None:
    rows = "".join(f"<tr><td>{i}</td><td><b>dose</b> {i} mg</td><td>&#160;</td></tr>" for i in range(5000))
    started = time.perf_counter()
    assert narrative_problems(div(f"<table><thead><tr><th>n</th></tr></thead><tbody>{rows}</tbody></table>")) == []
    assert time.perf_counter() - started < 1.0


def test_repeated_problem_is_reported_once() -> None:
    assert narrative_problems(div("<script>a</script>" * 50)) == [
        "element <script> is not allowed in narrative (txt-1)"
    ]


def test_at_most_ten_problems_are_reported() -> None:
    markup = "".join(f"<x{i} on{i}='a'>t</x{i}>" for i in range(40))
    assert len(narrative_problems(div(markup))) == MAX_PROBLEMS


def test_unpaired_surrogate_is_refused() -> None:
    assert narrative_problems(div("<p>\ud800</p>")) == [
        "the narrative contains unpaired surrogate characters, which are not valid Unicode"
    ]


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "<div",
        div("&nbsp;"),
        div("\ud800"),
        div("<script/>"),
        "<!DOCTYPE x><div/>",
        div("<p>" * 300),
        div("<a href='javascript:x' onclick='y'>z</a>"),
    ],
)
def test_messages_never_show_python_internals(bad: str) -> None:
    for problem in narrative_problems(bad):
        assert not any(word in problem for word in ("Error", "Traceback", "expat", "Exception", "_Stop"))
