"""Content: Liquid templates rendered for one channel, inside the brand, with tracked links; and brand checks.

Modules:

* ``liquid``: the sandboxed Liquid environment (compile cache, syntax errors with
  line and column, the variables a template uses).
* ``context``: the documented template context (``customer``, ``brand``,
  ``campaign``, ``links``) built from plain data only.
* ``blocks``: the email body's structured blocks (validation, HTML, plain text).
* ``email``: the brand's responsive email layout, plain-text part and headers.
* ``links``: UTM parameters, ``/l/<code>`` short links with click tracking.
* ``sms``: GSM-7 / UCS-2 detection, segment count, cost estimate.
* ``render``: ``render_template``, the one entry point for previews, tests and sends.
* ``checks``: the brand checks over a ``RenderedContent``.
"""
