"""``python -m benchmarks render``: personalised email rendering, Chorus's Liquid next to Django's engine.

Contract:

* The body is a ~1 KB email text with 5 variables (first name with a ``default``,
  city, an attribute through ``upcase``, campaign and brand names), rendered for
  a rotating set of distinct customers' contexts, on one core (this process).
* Chorus renders through ``campaigns.content.liquid.render_source``, the call
  every email block, SMS and post takes when a campaign is sent: the compiled
  template comes from the cache, and this template takes the fast path.
* In the same run, the same body in Django's template language is rendered by
  a Django ``Engine`` (autoescape off, like the Liquid side, and no debug: its
  best case), and by python-liquid's own renderer (no fast path) for reference.
  The three outputs are checked to be identical first.
* Each side is timed ``--repeat`` times (alternating), ``--renders`` renders
  each; the medians are printed as renders per second. No database is used.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.db import PROJECT_ROOT, BenchError

TARGET = 40_000  # renders/s on one core (issue 4)

_PARAGRAPH = (
    "Our spring collection is in: light shells, merino layers and trail shoes built for long days outside. "
    "For one week everything is 20% off in every store and online, and delivery is free over 50 EUR. "
)
LIQUID_BODY = (
    "Hi {{ customer.first_name | default: 'there' }},\n\n"
    + _PARAGRAPH * 2
    + "\n\nWe picked a few things for the trails around {{ customer.city }}.\n\n"
    + _PARAGRAPH * 2
    + "\n\nAs a {{ customer.attributes.tier | upcase }} member you also get early access to the summer range.\n\n"
    + "{{ campaign.name }} by {{ brand.name }}. Free returns within 30 days.\n"
)
DJANGO_BODY = LIQUID_BODY.replace("| default: 'there' }}", '|default:"there" }}').replace("| upcase }}", "|upper }}")

_FIRST = ["Ana", "Bartek", "Chloé", "", "Emma", "Felix", "Greta", "Hugo", "Iga", "Jonas"]
_CITIES = ["Kraków", "Berlin", "Lyon", "London", "Warszawa"]
_TIERS = ["bronze", "silver", "gold", "platinum"]


def contexts(count: int = 1000) -> list[dict]:
    """Distinct customers' contexts, as ``campaigns.content.context.template_context`` shapes them."""
    return [
        {
            "customer": {
                "first_name": _FIRST[n % len(_FIRST)],
                "last_name": "Nowak",
                "city": _CITIES[n % len(_CITIES)],
                "country": "PL",
                "attributes": {"tier": _TIERS[n % len(_TIERS)], "orders": n % 7},
                "persona": {"name": "", "slug": ""},
            },
            "brand": {"name": "Northwind Outfitters"},
            "campaign": {"name": "Spring sale"},
            "links": {"unsubscribe": f"https://chorus.example/u/{n}"},
        }
        for n in range(count)
    ]


def _setup_django() -> None:
    import django

    if str(PROJECT_ROOT) not in sys.path:
        sys.path.insert(0, str(PROJECT_ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    django.setup()


def renderers() -> dict[str, Callable[[dict], str]]:
    """name -> render(context) for each side."""
    from django.template import Context, Engine

    from campaigns.content.liquid import compile_source, render_source

    django_template = Engine(autoescape=False, debug=False).from_string(DJANGO_BODY)
    reference = compile_source(LIQUID_BODY).template
    if compile_source(LIQUID_BODY).fast is None:
        raise BenchError("the benchmark body does not take Chorus's fast path")
    return {
        "chorus": lambda context: render_source(LIQUID_BODY, context, part="body"),
        "django": lambda context: django_template.render(Context(context)),
        "python-liquid": lambda context: reference.render(context),
    }


def _time(render: Callable[[dict], str], data: list[dict], renders: int) -> float:
    """Renders per second for ``renders`` renders over ``data`` (cycled)."""
    size = len(data)
    started = time.perf_counter()
    for n in range(renders):
        render(data[n % size])
    return renders / (time.perf_counter() - started)


def run(*, renders: int, repeat: int) -> dict:
    _setup_django()
    data = contexts()
    sides = renderers()
    for context in data[:50]:
        outputs = {name: render(context) for name, render in sides.items()}
        if len(set(outputs.values())) != 1:
            raise BenchError(f"the engines disagree on {context['customer']}: {outputs}")
    for render in sides.values():
        _time(render, data, min(renders, 2_000))  # warm up
    samples: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(repeat):
        for name, render in sides.items():
            samples[name].append(_time(render, data, renders))
    return {
        "body_bytes": len(LIQUID_BODY.encode()),
        "rendered_bytes": len(sides["chorus"](data[0]).encode()),
        "variables": 5,
        "renders_per_sample": renders,
        "repeat": repeat,
        "samples": samples,
        "medians": {name: statistics.median(values) for name, values in samples.items()},
        "target": TARGET,
        "host": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
    }


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("render", help="time personalised email rendering against Django's template engine")
    parser.add_argument("--renders", type=int, default=50_000, help="renders per timed sample (default 50,000)")
    parser.add_argument("--repeat", type=int, default=5, help="timed samples per side; medians reported (default 5)")
    parser.add_argument("--json", type=Path, help="also write every sample and the medians here")


def main(args: argparse.Namespace) -> int:
    if args.renders < 1 or args.repeat < 1:
        raise BenchError("--renders and --repeat must be at least 1")
    result = run(renders=args.renders, repeat=args.repeat)
    medians = result["medians"]
    print(
        f"render: {result['body_bytes']:,}-byte body, {result['variables']} variables, "
        f"{args.renders:,} renders x {args.repeat} per side, one core"
    )
    for name in ("chorus", "django", "python-liquid"):
        print(f"  {name:<14} {medians[name]:>10,.0f} renders/s (median)")
    ratio = medians["chorus"] / medians["django"]
    verdict = "met" if medians["chorus"] >= TARGET else "NOT met"
    print(f"  chorus / django = {ratio:.2f}x; target {TARGET:,}/s {verdict}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0
