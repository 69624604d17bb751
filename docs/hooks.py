"""mkdocs hook: show the Sphinx roles of the docstrings (:func:`x`, :class:`~a.b`) as code."""

import re

_ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|obj|exc|math):(<code>)~?")


def on_page_content(html, **kwargs):
    return _ROLE.sub(r"\1", html)
