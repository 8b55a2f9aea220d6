"""A local Sphinx extension for the book: every page loads each script once.

Under Jupyter Book 1.0.4 (Sphinx 7.4, sphinx-thebe 0.3.1) the inline thebe configuration script
(``const THEBE_JS_URL = ...``) is registered twice (``sphinx_thebe`` adds it after the
builder has started, so it lands both in the builder's list, with filename ``None``, and in the
registry's, with filename ``""``), so every page throws "Identifier 'THEBE_JS_URL' has already
been declared" in the browser; sphinx-togglebutton's inline script is doubled the same way. This drops exact duplicates (same file
or inline body, same attributes) from the page's script list, keeping the first.
"""

from __future__ import annotations

from typing import Any


def _unique_scripts(app: Any, pagename: str, templatename: str, context: dict, doctree: Any) -> None:
    scripts = context.get("script_files")
    if not scripts:
        return
    seen: set[tuple] = set()
    unique = []
    for script in scripts:
        attributes = getattr(script, "attributes", {}) or {}
        # an inline script is registered once with filename None and once with "" (the registry's
        # copy): both mean "no file"
        filename = getattr(script, "filename", script) or ""
        key = (str(filename), tuple(sorted(attributes.items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def setup(app: Any) -> dict[str, Any]:
    app.connect("html-page-context", _unique_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
