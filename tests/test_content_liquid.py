"""The Liquid sandbox, error locations, variable analysis, and the fast path's fidelity to python-liquid."""

from __future__ import annotations

import string
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from liquid.exceptions import LiquidError

from campaigns.content.context import CONTEXT_SCHEMA, template_context, unknown_variables
from campaigns.content.liquid import (
    FAST_FILTERS,
    ContentError,
    check_source,
    compile_source,
    render_source,
    variables,
)
from tests.factories import BrandFactory, CustomerFactory

CONTEXT = {
    "customer": {
        "first_name": "Ana",
        "last_name": "Nowak",
        "attributes": {"tier": "gold", "topics": ["hiking", "travel"]},
        "persona": {"name": "Loyal", "slug": "loyal"},
    },
    "brand": {"name": "Northwind", "legal_footer": "Northwind, Kraków"},
}


def render(source: str, context: dict | None = None) -> str:
    return render_source(source, CONTEXT if context is None else context, part="body")


# --- the sandbox --------------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "{{ settings.SECRET_KEY }}",
        "{{ customer.__class__ }}",
        "{{ customer.first_name.__class__.__mro__ }}",
        "{{ customer['__class__']['__init__']['__globals__'] }}",
        "{{ customer.attributes.__dict__ }}",
        "{{ customer.first_name.upper }}",
        "{{ customer | map: '__class__' | join: ',' }}",
        "{{ customer.attributes.topics | map: '__class__' | first }}",
        "{% assign c = customer.first_name.__class__ %}{{ c.__subclasses__ }}",
        "{{ brand.name.__len__ }}{{ brand.name.format }}",
    ],
)
def test_python_attributes_settings_and_globals_are_out_of_reach(source):
    assert render(source) == ""


def test_the_whole_context_renders_as_its_plain_data_and_nothing_more():
    # Dicts print as data, never as an object with methods or a module.
    output = render("{{ customer.persona }}")
    assert "object at" not in output and "<" not in output
    assert "Loyal" in output


@pytest.mark.parametrize("tag", ["include", "render"])
@pytest.mark.parametrize("name", ["'/etc/passwd'", "'../config/settings.py'", "'snippet'"])
def test_include_and_render_are_syntax_errors_naming_the_tag(tag, name):
    source = f"Hello\n  {{% {tag} {name} %}}"
    with pytest.raises(ContentError) as caught:
        check_source(source, "body")
    error = caught.value
    assert (error.line, error.column) == (2, 6)
    assert f"the '{tag}' tag is not available" in error.message
    assert "passwd" not in render_source("{{ 'x' }}", {}, part="body")


def test_runaway_loops_stop_with_an_error_instead_of_spinning():
    with pytest.raises(ContentError, match="loop iteration limit"):
        render("{% for i in (1..100000000) %}x{% endfor %}")


def test_huge_output_stops_with_an_error():
    context = {"chunk": "x" * 500}
    with pytest.raises(ContentError, match="output stream limit"):
        render_source("{% for i in (1..5000) %}{{ chunk }}{% endfor %}", context, part="body")


# --- errors with line and column ------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "line", "column", "message"),
    [
        ("Hi {{ customer.first_name", 1, 4, "expected '}}'"),
        ("Hi there,\n\nSee you {% if customer.city %}in town", 3, 12, "'{% if %}' is never closed"),
        ("{% for t in x %}{% if t %}{% endif %}", 1, 4, "'{% for %}' is never closed"),
        ("one\ntwo {{ customer.first_name | shout }}", 2, 30, "unknown filter 'shout'"),
        ("{% assign x = customer.first_name | nope: 1 %}", 1, 37, "unknown filter 'nope'"),
        ("{% endif %}", 1, 4, "unexpected tag 'endif'"),
    ],
)
def test_syntax_errors_name_the_part_line_and_column(source, line, column, message):
    with pytest.raises(ContentError) as caught:
        check_source(source, "block 2 text")
    error = caught.value
    assert (error.part, error.line, error.column) == ("block 2 text", line, column)
    assert message in error.message
    assert str(error).startswith(f"block 2 text, line {line}, column {column}: ")


def test_render_time_errors_are_content_errors_with_a_location():
    with pytest.raises(ContentError) as caught:
        render("ok\n{{ 10 | divided_by: 0 }}")
    assert caught.value.line == 2
    assert "divide by 0" in caught.value.message


def test_text_without_liquid_is_returned_as_is():
    assert render("Plain text, no braces.") == "Plain text, no braces."


# --- variables and unknown variables -----------------------------------------------------


def test_variables_lists_every_context_path_read_with_line_and_column():
    source = (
        "Hi {{ customer.first_name | default: brand.name }},\n"
        "{% if customer.attributes.tier == 'gold' %}{{ campaign.name }}{% endif %}\n"
        "{% assign town = customer.city %}{{ town }} {% for t in customer.attributes.topics %}{{ t }}{% endfor %}"
    )
    found = [(use.path, use.line, use.column) for use in variables(source, part="body")]
    assert found == [
        ("customer.first_name", 1, 7),
        ("brand.name", 1, 38),
        ("customer.attributes.tier", 2, 7),
        ("campaign.name", 2, 47),
        ("customer.city", 3, 18),
        ("customer.attributes.topics", 3, 57),
    ]


def test_variables_of_invalid_liquid_raise_a_located_content_error():
    with pytest.raises(ContentError) as caught:
        variables("{{ customer.first_name ", part="subject")
    assert caught.value.part == "subject"
    assert caught.value.line == 1


def test_unknown_variables_are_flagged_known_ones_and_any_attribute_pass():
    source = (
        "{{ customer.first_name }} {{ customer.frist_name }} {{ first_name }} {{ settings.SECRET_KEY }}\n"
        "{{ customer.attributes.anything.deep }} {{ customer.persona.slug }} {{ links.unsubscribe }}\n"
        "{{ customer.attributes.topics.size }} {{ brand.colour }} {{ customer.attributes[campaign.slgu] }}"
    )
    unknown = [(use.path, use.line) for use in unknown_variables(variables(source, part="body"))]
    assert unknown == [
        ("customer.frist_name", 1),
        ("first_name", 1),
        ("settings.SECRET_KEY", 1),
        ("brand.colour", 3),
        ("campaign.slgu", 3),
    ]


@pytest.mark.django_db
def test_every_documented_path_is_in_the_built_context():
    customer = CustomerFactory(attributes={"tier": "gold"})
    context = template_context(brand=BrandFactory(), customer=customer, links={"unsubscribe": "https://x.example/u"})

    def walk(schema, data, path):
        for key, below in schema.items():
            assert key in data, f"{path}{key} is documented but not in the context"
            if isinstance(below, dict):
                walk(below, data[key], f"{path}{key}.")

    walk(CONTEXT_SCHEMA, context, "")


@pytest.mark.django_db
def test_the_context_holds_plain_data_only():
    context = template_context(brand=BrandFactory(), customer=CustomerFactory())

    def plain(value):
        if isinstance(value, dict):
            return all(isinstance(k, str) and plain(v) for k, v in value.items())
        if isinstance(value, list):
            return all(plain(v) for v in value)
        return value is None or type(value) in (str, int, float, bool, Decimal)

    assert plain(context)


# --- the fast path ------------------------------------------------------------------------


def test_a_personalised_body_takes_the_fast_path_and_a_tag_does_not():
    assert compile_source("Hi {{ customer.first_name | default: 'there' | upcase }}!").fast is not None
    assert compile_source("{% if customer.first_name %}Hi{% endif %}").fast is None
    assert compile_source("{{ customer.attributes.topics | join: ', ' }}").fast is None  # not whitelisted
    assert compile_source("{{ customer.attributes.topics.size }}").fast is None  # special property
    assert compile_source("{{ now }}").fast is None  # python-liquid's built-in


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, ""),
        (True, "true"),
        (False, "false"),
        (0, "0"),
        (-3, "-3"),
        (2.5, "2.5"),
        (1e20, "1e+20"),
        (Decimal("10.50"), "10.50"),
        (["a", 1, None, True, ["b", 2.0]], "a1NoneTrue['b', 2.0]"),  # python-liquid's own, odd as it is
        ({"k": "v"}, "{'k': 'v'}"),
        ("<b>&'\"", "<b>&'\""),
        ("", ""),
    ],
)
def test_fast_path_prints_values_exactly_as_python_liquid(value, expected):
    compiled = compile_source("[{{ v }}]")
    assert compiled.fast is not None
    assert compiled.fast({"v": value}) == compiled.template.render({"v": value}) == f"[{expected}]"


@pytest.mark.parametrize(
    "context",
    [{}, {"v": None}, {"v": False}, {"v": ""}, {"v": []}, {"v": 0}, {"v": "x"}, {"v": {"a": 1}}],
)
def test_fast_path_default_treats_nil_false_and_empty_like_python_liquid(context):
    for source in ("{{ v | default: 'fallback' }}", "{{ v | default: 'fb', allow_false: true }}", "{{ v.a.b }}"):
        compiled = compile_source(source)
        assert compiled.fast is not None
        assert compiled.fast(context) == compiled.template.render(context)


@pytest.mark.parametrize(
    ("source", "context"),
    [
        ("{{ v[0] }}", {"v": "abc"}),  # Liquid does not index into strings
        ("{{ v[-1] }}", {"v": ["a", "b"]}),
        ("{{ v[5] }}", {"v": ["a"]}),
        ("{{ v['0'] }}", {"v": {"0": "string key"}}),
        ("{{ v[0] }}", {"v": {0: "int key"}}),
        ("{{ v.a.b }}", {"v": {"a": "text"}}),
        ("{{ v.a }}", {"v": None}),
        ("{{ v['x-y'] | upcase }}", {"v": {"x-y": "dash"}}),
    ],
)
def test_fast_path_looks_paths_up_like_python_liquid(source, context):
    compiled = compile_source(source)
    assert compiled.fast is not None
    assert compiled.fast(context) == compiled.template.render(context)


def test_fast_path_errors_are_python_liquids_errors():
    compiled = compile_source("{{ v | truncate: 'x' }}")
    assert compiled.fast is not None
    with pytest.raises(LiquidError):
        compiled.render({"v": "hello"})


# Generated templates: text, whitespace control and outputs of paths with whitelisted filters.
_KEYS = ["a", "b", "c", "first_name", "0", "x-y"]
_text = st.text(alphabet=string.ascii_letters + " \n\t,.!{}%<>&'\"é€😀", max_size=12).filter(
    lambda t: "{{" not in t and "{%" not in t and not t.endswith("{")
)
_segment = st.one_of(
    st.sampled_from(_KEYS).map(lambda k: f".{k}" if k.isidentifier() else f"['{k}']"),
    st.integers(-2, 3).map(lambda i: f"[{i}]"),
)
_path = st.builds(
    lambda root, rest: root + "".join(rest), st.sampled_from(["v", "w", "missing"]), st.lists(_segment, max_size=3)
)
_literal = st.one_of(
    st.text(alphabet=string.ascii_letters + " <&", max_size=6).map(lambda s: f"'{s}'"),
    st.integers(-5, 50).map(str),
    st.sampled_from(["true", "false", "nil", "1.5"]),
)
_filter = st.one_of(
    st.sampled_from(
        [
            "upcase",
            "downcase",
            "capitalize",
            "strip",
            "lstrip",
            "rstrip",
            "escape",
            "escape_once",
            "url_encode",
            "strip_html",
            "strip_newlines",
            "newline_to_br",
        ]
    ),
    st.builds(lambda a: f"default: {a}", st.one_of(_literal, _path)),
    st.builds(lambda a: f"default: {a}, allow_false: true", _literal),
    st.builds(
        lambda name, a: f"{name}: {a}", st.sampled_from(["append", "prepend", "remove"]), st.one_of(_literal, _path)
    ),
    st.builds(lambda a, b: f"replace: {a}, {b}", _literal, _literal),
    st.builds(lambda n: f"truncate: {n}", st.integers(0, 12)),
    st.builds(lambda n: f"truncatewords: {n}", st.integers(0, 4)),
)
_output = st.builds(
    lambda left, path, filters, right: f"{{{{{left} {path}{''.join(' | ' + f for f in filters)} {right}}}}}",
    st.sampled_from(["", "-"]),
    _path,
    st.lists(_filter, max_size=3),
    st.sampled_from(["", "-"]),
)
_template = st.lists(st.one_of(_text, _output), min_size=1, max_size=8).map("".join)
_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-1000, 1000),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.text(alphabet=string.ascii_letters + " \n<>&'\"éß😀", max_size=10),
    st.decimals(allow_nan=False, allow_infinity=False, places=2, min_value=-100, max_value=100),
)
_value = st.recursive(
    _scalar,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(_KEYS), inner, max_size=4)),
    max_leaves=8,
)
_context = st.dictionaries(st.sampled_from(["v", "w"]), _value, max_size=2)


def _outcome(render_call):
    try:
        return ("ok", render_call())
    except LiquidError as exc:
        return ("error", type(exc).__name__)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(source=_template, context=_context)
def test_fast_path_renders_byte_identical_to_python_liquid(source, context):
    for html in (False, True):
        try:
            compiled = compile_source(source, html=html)
        except LiquidError:
            return  # not valid Liquid (e.g. a filter argument python-liquid refuses): nothing to compare
        assert compiled.fast is not None, source  # the generator only makes fast-path templates
        reference = _outcome(lambda compiled=compiled: compiled.template.render(context))
        assert _outcome(lambda compiled=compiled: compiled.render(context)) == reference, (source, context)
        if reference[0] == "ok":
            # The closure on its own (no fallback involved) gives the same bytes.
            assert compiled.fast(context) == reference[1], (source, context)


def test_the_fast_path_whitelist_holds_no_filter_that_needs_the_render_context():
    from campaigns.content.liquid import _env

    for name in FAST_FILTERS:
        assert not getattr(_env.filters[name], "with_context", False), name
