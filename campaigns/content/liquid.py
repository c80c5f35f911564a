"""The sandboxed Liquid environment every template is compiled and rendered with.

Only the plain data handed in as context is reachable: python-liquid resolves
``a.b`` by item lookup (``a["b"]``), never by attribute, so ``__class__`` and
friends are just missing keys; there is no loader (``include`` and ``render``
are syntax errors); loops and output are bounded.

Compiled templates are cached. Most marketing content is text with a few
``{{ customer.first_name | default: "there" }}`` outputs: such templates also get
a *fast path*, a closure that joins the literal text with the looked-up values
and gives byte-for-byte the output python-liquid gives (the filters are
python-liquid's own functions; ``tests/test_content_liquid.py`` compares both
on generated templates). Everything else renders through python-liquid.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache, partial

from liquid import Environment, RenderContext
from liquid.builtin.content import ContentNode
from liquid.builtin.expressions import FilteredExpression, Path
from liquid.builtin.expressions.primitive import Literal, Nil
from liquid.builtin.output import OutputNode
from liquid.exceptions import LiquidError, LiquidSyntaxError, UnknownFilterError
from liquid.stringify import to_liquid_string
from liquid.tag import Tag
from liquid.template import BoundTemplate
from liquid.token import TOKEN_WORD, Token

__all__ = [
    "Compiled",
    "ContentError",
    "VariableUse",
    "check_source",
    "compile_source",
    "render_source",
    "variables",
]


class ContentError(ValueError):
    """Content that cannot be rendered; the message names the part and the problem."""

    def __init__(self, message: str, *, part: str = "", line: int | None = None, column: int | None = None):
        super().__init__(message)
        self.message = message
        self.part = part
        self.line = line
        self.column = column


@dataclass(frozen=True)
class VariableUse:
    """A variable path a template reads, e.g. ``customer.first_name``, and where (1-based line and column)."""

    path: str
    part: str
    line: int
    column: int
    segments: tuple = field(default=(), compare=False)  # ("customer", "first_name"); nested paths as tuples


class _NoPartials(Tag):
    """``include`` and ``render`` load other templates: a Chorus template has only its own text."""

    block = False

    def parse(self, stream):
        raise LiquidSyntaxError(
            f"the '{self.name}' tag is not available: a template cannot load other templates or files",
            token=stream.current,
        )


class _Include(_NoPartials):
    name = "include"


class _Render(_NoPartials):
    name = "render"


class _SandboxEnvironment(Environment):
    # A template is content, not a program: bound what one render may do.
    loop_iteration_limit = 10_000
    output_stream_limit = 1_000_000
    local_namespace_limit = 1_000_000
    context_depth_limit = 10

    def setup_tags_and_filters(self, *, extra: bool = False) -> None:
        super().setup_tags_and_filters(extra=False)
        self.add_tag(_Include)
        self.add_tag(_Render)


_env = _SandboxEnvironment()
_OUTPUT_LIMIT = _SandboxEnvironment.output_stream_limit
# For the email's raw-HTML block: the marketer's markup is kept, every value is HTML-escaped.
_html_env = _SandboxEnvironment(autoescape=True)


# --- errors and positions ------------------------------------------------------------


def _position(source: str, index: int) -> tuple[int, int]:
    """1-based line and column of ``index`` in ``source``."""
    index = max(0, min(index, len(source)))
    line = source.count("\n", 0, index) + 1
    column = index - (source.rfind("\n", 0, index) + 1) + 1
    return line, column


def _token_at(source: str, index: int, value: str) -> Token:
    return Token(TOKEN_WORD, value, index, source)


_UNCLOSED = re.compile(r"expected tag end(\w+)")


def _unclosed_block(source: str, tag: str) -> int:
    """Where the name of the ``{% tag %}`` never closed stands, or -1 (python-liquid only says the text ended)."""
    opened: list[int] = []
    for match in re.finditer(rf"{{%-?\s*(end)?({tag})\b", source):
        if match.group(1):
            if opened:
                opened.pop()
        else:
            opened.append(match.start(2))
    return opened[-1] if opened else -1


def _error(exc: LiquidError, part: str, source: str) -> ContentError:
    message = str(exc.message or "invalid Liquid")
    token = exc.token
    index = -1
    if token is not None and token.source and token.start_index >= 0:
        source, index = token.source, token.start_index
    elif unclosed := _UNCLOSED.match(message):
        tag = unclosed.group(1)
        message = f"'{{% {tag} %}}' is never closed with '{{% end{tag} %}}'"
        index = _unclosed_block(source, tag)
    if index < 0:
        return ContentError(f"{part}: {message}", part=part)
    line, column = _position(source, index)
    return ContentError(f"{part}, line {line}, column {column}: {message}", part=part, line=line, column=column)


# --- the fast path -------------------------------------------------------------------

# Filters the fast path may call: python-liquid's own functions, none needs the render context.
FAST_FILTERS = frozenset(
    {
        "default",
        "upcase",
        "downcase",
        "capitalize",
        "strip",
        "lstrip",
        "rstrip",
        "escape",
        "escape_once",
        "append",
        "prepend",
        "replace",
        "remove",
        "truncate",
        "truncatewords",
        "url_encode",
        "strip_html",
        "strip_newlines",
        "newline_to_br",
    }
)
# Names python-liquid resolves itself when the context lacks them, and keys its
# item lookup treats specially: leave those paths to python-liquid.
_BUILTIN_ROOTS = frozenset({"now", "today"})
_SPECIAL_KEYS = frozenset({"size", "first", "last"})
_LOOKUP_ERRORS = (KeyError, TypeError, IndexError)


def _path_getter(path: Path, env: Environment) -> Callable[[dict], object] | None:
    segments = path.path
    if not segments or not all(isinstance(s, str | int) and not isinstance(s, bool) for s in segments):
        return None
    root, rest = segments[0], tuple(segments[1:])
    if not isinstance(root, str) or root in _BUILTIN_ROOTS or any(s in _SPECIAL_KEYS for s in rest):
        return None
    undefined, token = env.undefined, path.token

    def get(context: dict) -> object:
        try:
            obj = context[root]
            for key in rest:
                # Liquid does not index into strings.
                if key.__class__ is int and isinstance(obj, str):
                    raise TypeError
                obj = obj[key]
        except _LOOKUP_ERRORS:
            return undefined(root, token=token)
        return obj

    return get


def _filter_caller(flt, env: Environment, static: RenderContext) -> Callable[[object, dict], object] | None:
    if flt.name not in FAST_FILTERS:
        return None
    func = env.filters[flt.name]
    if getattr(func, "with_context", False):
        return None
    if getattr(func, "with_environment", False):
        func = partial(func, environment=env)
    positional, keyword = [], {}
    for arg in flt.args:
        name, value = getattr(arg, "name", None), arg.value
        if isinstance(value, Literal | Nil):
            # Literals evaluate as python-liquid would (strings become Markup when autoescaping).
            getter = partial(lambda v, _context: v, value.evaluate(static))
        elif isinstance(value, Path):
            getter = _path_getter(value, env)
            if getter is None:
                return None
        else:
            return None
        if name:
            keyword[name] = getter
        else:
            positional.append(getter)
    if not positional and not keyword:
        return lambda value, _context: func(value)

    def call(value: object, context: dict) -> object:
        return func(
            value, *[get(context) for get in positional], **{name: get(context) for name, get in keyword.items()}
        )

    return call


def _output_renderer(expression, env: Environment, static: RenderContext) -> Callable[[dict], str] | None:
    if not isinstance(expression, FilteredExpression) or not isinstance(expression.left, Path):
        return None
    get = _path_getter(expression.left, env)
    filters = [_filter_caller(flt, env, static) for flt in expression.filters or ()]
    if get is None or None in filters:
        return None
    autoescape = env.autoescape
    if not filters and not autoescape:

        def plain(context: dict) -> str:
            value = get(context)
            return value if value.__class__ is str else to_liquid_string(value, False)

        return plain

    def filtered(context: dict) -> str:
        value = get(context)
        for call in filters:
            value = call(value, context)
        return to_liquid_string(value, autoescape)

    return filtered


def _fast_renderer(template: BoundTemplate) -> Callable[[dict], str] | None:
    """A closure rendering ``template`` without python-liquid, if it is only text and simple outputs."""
    parts: list[str | Callable[[dict], str]] = []
    static = RenderContext(template)
    for node in template.nodes:
        if isinstance(node, ContentNode):
            parts.append(node.text)
        elif isinstance(node, OutputNode):
            output = _output_renderer(node.expression, template.env, static)
            if output is None:
                return None
            parts.append(output)
        else:
            return None
    # Literal runs joined up front; outputs at odd positions.
    literals: list[str] = [""]
    outputs: list[Callable[[dict], str]] = []
    for part in parts:
        if isinstance(part, str):
            literals[-1] += part
        else:
            outputs.append(part)
            literals.append("")
    if not outputs:
        text = literals[0]
        return lambda _context: text
    head, tail = literals[0], literals[1:]
    pairs = tuple(zip(outputs, tail, strict=True))

    def render(context: dict) -> str:
        out = [head]
        for output, literal in pairs:
            out.append(output(context))
            out.append(literal)
        return "".join(out)

    return render


# --- compiling and rendering -----------------------------------------------------------


class Compiled:
    """A compiled template: ``render(context)`` takes the fast path when it can."""

    __slots__ = ("fast", "source", "template")

    def __init__(self, source: str, template: BoundTemplate):
        self.source = source
        self.template = template
        self.fast = _fast_renderer(template)

    def render(self, context: dict | None = None, /, **kwargs: object) -> str:
        """``source`` rendered with ``context``; raises python-liquid's ``LiquidError`` if it cannot be."""
        if kwargs:
            context = {**(context or {}), **kwargs}
        context = context or {}
        if self.fast is None:
            return self.template.render(context)
        try:
            text = self.fast(context)
        except Exception:
            # Whatever went wrong, python-liquid renders it again and raises the error it defines.
            return self.template.render(context)
        if len(text) > _OUTPUT_LIMIT:
            return self.template.render(context)  # raises python-liquid's output limit error
        return text


@lru_cache(maxsize=4096)
def _compile(source: str, html: bool) -> Compiled:
    env = _html_env if html else _env
    template = env.from_string(source)
    # python-liquid finds an unknown filter only when it runs; the editor wants it now.
    for name, spans in template.analyze(include_partials=False).filters.items():
        if name not in env.filters:
            raise UnknownFilterError(f"unknown filter '{name}'", token=_token_at(source, spans[0].index, name))
    return Compiled(source, template)


def compile_source(source: str, *, html: bool = False) -> Compiled:
    """The compiled template for ``source`` (cached: a campaign compiles each text once).

    ``html=True`` compiles for the raw-HTML email block: every output is HTML-escaped.
    Raises python-liquid's ``LiquidError`` on a syntax error; ``check_source`` turns that into a ``ContentError``.
    """
    return _compile(source, html)


def check_source(source: str, part: str, *, html: bool = False) -> None:
    """Raise ``ContentError`` (with line and column) if ``source`` is not valid Liquid."""
    try:
        _compile(source, html)
    except LiquidError as exc:
        raise _error(exc, part, source) from None


def render_source(source: str, context: dict, *, part: str, html: bool = False) -> str:
    """``source`` rendered with ``context``; ``ContentError`` naming ``part`` (line, column) if it cannot be."""
    if "{" not in source:
        return source
    try:
        return _compile(source, html).render(context)
    except LiquidError as exc:
        raise _error(exc, part, source) from None


def _segments(segments) -> tuple:
    return tuple(_segments(s) if isinstance(s, list) else s for s in segments)


@lru_cache(maxsize=4096)
def _variables(source: str) -> tuple[tuple[str, int, tuple], ...]:
    analysis = _compile(source, False).template.analyze(include_partials=False)
    found = [
        (str(variable), variable.span.index, _segments(variable.segments))
        for uses in analysis.globals.values()
        for variable in uses
    ]
    return tuple(sorted(found, key=lambda use: use[1]))


def variables(source: str, *, part: str) -> list[VariableUse]:
    """Every variable path ``source`` reads from the context, in order, with where it is.

    Names the template assigns itself (``assign``, ``capture``, loop variables)
    are not included. Invalid Liquid: ``ContentError``.
    """
    if "{" not in source:
        return []
    try:
        found = _variables(source)
    except LiquidError as exc:
        raise _error(exc, part, source) from None
    return [
        VariableUse(path=path, part=part, line=line, column=column, segments=segments)
        for path, index, segments in found
        for line, column in [_position(source, index)]
    ]
