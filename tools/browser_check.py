"""Open every page of the built book in a headless Chromium and fail on anything broken.

Usage::

    python tools/browser_check.py _build/html --toc _toc.yml --chromium /usr/bin/chromium \
        --screenshots _build/screenshots

The HTML folder is served on the loopback interface (``http.server`` on a free port, in a thread).
Every page (all ``.html`` files except search, the general index and the root redirect) is opened
in a fresh tab, and each of these counts as a problem:

- a page, or anything it loads (CSS, JS, images, fonts), answering HTTP >= 400, or a failed request;
- a request to any host other than loopback: the book must work offline (such requests are aborted);
- a console error or an uncaught exception in the page;
- an ``<img>`` that did not decode (``naturalWidth == 0``), or a matplotlib figure that reached the
  page only as its text repr (``<Figure size 600x300 with 1 Axes>``);
- math left unrendered: a Sphinx math element without MathJax output, a MathJax TeX error, or raw
  TeX delimiters (``$$``, ``\\(``, ``\\[``) in the visible text outside code;
- a link to a local file that does not exist, or to an anchor that the target page lacks;
- a ``_toc.yml`` entry without its HTML page.

A full-page screenshot of each page is saved. One line is printed per page, then a summary line
``browser check: N pages, M problems``; the exit status is 1 when there is any problem.
Chromium comes from the system (Debian ``chromium``); ``playwright install`` is never needed.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import re
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

import yaml

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
# Generated pages that are not part of the book's content.
SKIPPED_PAGES = {"search.html", "genindex.html", "py-modindex.html"}
SKIPPED_DIRS = {"_static", "_sources", "_images", "_sphinx_design_static", "_panels_static"}
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
INLINE_SCHEMES = {"data", "blob", "about", "javascript", "mailto"}
PAGE_TIMEOUT_MS = 30_000
VIEWPORT = {"width": 1280, "height": 900}

# Waits until MathJax (when the page has math) has typeset, then until web fonts are in.
JS_WAIT_MATH = """
async () => {
  if (!document.querySelector('.math')) { await document.fonts.ready; return 'none'; }
  for (let i = 0; i < 200 && !(window.MathJax && MathJax.startup && MathJax.startup.promise); i++)
    await new Promise(r => setTimeout(r, 50));
  if (!(window.MathJax && MathJax.startup && MathJax.startup.promise)) return 'missing';
  await MathJax.startup.promise;
  await document.fonts.ready;
  return 'ok';
}
"""
# Math elements without MathJax output, TeX errors, and raw TeX delimiters left in visible text.
JS_MATH_PROBLEMS = """
() => {
  const math = Array.from(document.querySelectorAll('.math'));
  const unrendered = math.filter(el => !el.querySelector('mjx-container'))
                         .map(el => el.textContent.trim().slice(0, 60));
  const errors = Array.from(document.querySelectorAll('mjx-merror'))
                      .map(el => (el.getAttribute('data-mjx-error') || el.textContent).slice(0, 80));
  const skip = 'pre, code, script, style, textarea, mjx-container, .highlight, .MathJax_Preview';
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  const raw = [];
  const pattern = /\\$\\$|\\\\\\(|\\\\\\[|\\\\begin\\{/;
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const el = node.parentElement;
    if (!el || el.closest(skip)) continue;
    if (pattern.test(node.textContent)) raw.push(node.textContent.trim().slice(0, 60));
  }
  return {count: math.length, unrendered, errors, raw};
}
"""
# Waits for every image (lazy ones made eager) and returns those that did not decode.
JS_BROKEN_IMAGES = """
async () => {
  const imgs = Array.from(document.images);
  imgs.forEach(img => { if (img.loading === 'lazy') img.loading = 'eager'; });
  const timeout = new Promise(r => setTimeout(r, 15000));
  const results = await Promise.race([
    Promise.all(imgs.map(img => img.decode().then(() => true, () => false))),
    timeout.then(() => imgs.map(img => img.complete && img.naturalWidth > 0)),
  ]);
  const broken = [];
  imgs.forEach((img, i) => {
    const svg = /\\.svg(\\?|#|$)/i.test(img.currentSrc || img.src);
    if (!results[i] || (img.naturalWidth === 0 && !svg)) broken.push(img.currentSrc || img.src);
  });
  return {count: imgs.length, broken};
}
"""
JS_LINKS = "() => Array.from(document.querySelectorAll('a[href]'), a => a.href)"
# A matplotlib figure stored as text only ("<Figure size 600x300 with 1 Axes>"): the notebook ran
# with a non-inline backend (e.g. MPLBACKEND=Agg), so the figure never reached the book.
JS_FIGURE_REPRS = """
() => {
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  const found = [];
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const el = node.parentElement;
    if (!el || el.closest('.cell_input, script, style')) continue;
    const m = node.textContent.match(/<Figure size [\\d.]+x[\\d.]+ with \\d+ Axes>/);
    if (m) found.push(m[0]);
  }
  return found;
}
"""


@dataclass
class PageReport:
    """What was found on one page."""

    path: str
    seconds: float = 0.0
    images: int = 0
    math: int = 0
    problems: list[str] = field(default_factory=list)


def book_pages(html_root: Path) -> list[str]:
    """The book's pages: every ``.html`` under ``html_root`` (POSIX paths relative to it, sorted),
    without generated pages (search, index), static folders or the root redirect ``index.html``."""
    pages = []
    for path in sorted(html_root.rglob("*.html")):
        rel = path.relative_to(html_root)
        if rel.parts[0] in SKIPPED_DIRS or rel.name in SKIPPED_PAGES:
            continue
        if rel.as_posix() == "index.html" and redirect_target(path) is not None:
            continue
        pages.append(rel.as_posix())
    return pages


def redirect_target(html_file: Path) -> str | None:
    """The URL of a ``<meta http-equiv="Refresh">`` redirect page, else None."""
    match = re.search(
        r'<meta\s+http-equiv="refresh"\s+content="\d+;\s*url=([^"]+)"',
        html_file.read_text(encoding="utf-8", errors="replace"),
        flags=re.IGNORECASE,
    )
    return match.group(1).strip() if match else None


def toc_docnames(toc_file: Path) -> list[str]:
    """Every document named in a Jupyter Book ``_toc.yml`` (root first), without extensions."""
    toc = yaml.safe_load(toc_file.read_text(encoding="utf-8"))
    if not isinstance(toc, dict) or "root" not in toc:
        raise ValueError(f"{toc_file}: not a Jupyter Book table of contents (no 'root' key)")
    names = [_strip_suffix(str(toc["root"]))]

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if "file" in node:
                names.append(_strip_suffix(str(node["file"])))
            for key in ("parts", "chapters", "sections", "subtrees", "entries"):
                walk(node.get(key))
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk({key: value for key, value in toc.items() if key != "root"})
    return names


def _strip_suffix(docname: str) -> str:
    for suffix in (".ipynb", ".md", ".rst"):
        if docname.endswith(suffix):
            return docname[: -len(suffix)]
    return docname


def is_offline_safe(url: str) -> bool:
    """True for URLs that stay on this machine: loopback hosts and inline schemes (data:, blob:)."""
    parts = urlsplit(url)
    if parts.scheme in INLINE_SCHEMES:
        return True
    return parts.scheme in {"http", "https", "ws", "wss"} and parts.hostname in LOOPBACK_HOSTS


def local_file(url: str, base_url: str, html_root: Path) -> Path | None:
    """The file under ``html_root`` that a URL on the book's server points to (None for other
    URLs); a folder URL means its ``index.html``."""
    if not url.startswith(base_url):
        return None
    path = unquote(urlsplit(url).path)
    target = html_root / path.lstrip("/")
    return target / "index.html" if path.endswith("/") or target.is_dir() else target


@functools.lru_cache(maxsize=None)
def _anchors(html_file: Path) -> frozenset[str]:
    text = html_file.read_text(encoding="utf-8", errors="replace")
    return frozenset(re.findall(r'\sid="([^"]+)"', text)) | frozenset(
        re.findall(r'\sname="([^"]+)"', text)
    )


def link_problems(links: list[str], base_url: str, html_root: Path) -> list[str]:
    """Local links whose file is missing, and links to an anchor that their HTML page lacks."""
    problems = []
    for url in sorted(set(links)):
        target = local_file(url, base_url, html_root)
        if target is None:
            continue  # a link to another site is fine: it is not loaded by the page
        if not target.is_file():
            problems.append(f"broken link: {url[len(base_url):]} (no such file)")
            continue
        fragment = unquote(urlsplit(url).fragment)
        if fragment and target.suffix == ".html" and fragment not in _anchors(target):
            problems.append(f"broken link: {url[len(base_url):]} (no anchor #{fragment})")
    return problems


def site_problems(html_root: Path, toc: Path | None) -> list[str]:
    """Problems of the site as a whole: a ``_toc.yml`` entry without its HTML page, and a root
    ``index.html`` that redirects to a missing page."""
    problems = []
    if toc is not None:
        for name in toc_docnames(toc):
            if not (html_root / f"{name}.html").is_file():
                problems.append(f"{toc}: entry {name!r} has no page {name}.html")
    index = html_root / "index.html"
    target = redirect_target(index) if index.is_file() else None
    if target is not None and not (html_root / unquote(target.split("#")[0])).is_file():
        problems.append(f"index.html redirects to a missing page: {target}")
    return problems


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass


@contextmanager
def serve(html_root: Path) -> Iterator[str]:
    """Serve ``html_root`` on 127.0.0.1 (a free port) in a thread; yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(html_root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def check_page(context, base_url: str, html_root: Path, rel: str, shots: Path | None) -> PageReport:
    """Open one page in a new tab of ``context`` and collect its problems."""
    report = PageReport(rel)
    problems = report.problems
    blocked: set[str] = set()  # URLs already reported (remote, HTTP error or failed)
    load_errors: list[str] = []
    start = time.perf_counter()
    page = context.new_page()

    def on_route(route) -> None:
        url = route.request.url
        if is_offline_safe(url):
            route.continue_()
        else:
            blocked.add(url)
            problems.append(f"remote request: {url}")
            route.abort()

    def on_response(response) -> None:
        if response.status >= 400:
            blocked.add(response.url)
            problems.append(f"HTTP {response.status}: {response.url}")

    def on_failed(request) -> None:
        if request.url not in blocked:
            blocked.add(request.url)
            problems.append(f"request failed ({request.failure}): {request.url}")

    def on_console(message) -> None:
        if message.type == "error":
            # Chromium echoes each failed load as "Failed to load resource"; it is reported only
            # when no request event explains it
            echo = message.text.startswith("Failed to load resource")
            (load_errors if echo else problems).append(f"console error: {message.text}")

    page.route("**/*", on_route)
    page.on("response", on_response)
    page.on("requestfailed", on_failed)
    page.on("console", on_console)
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    try:
        response = page.goto(base_url + rel, wait_until="load")
        if response is None or response.status >= 400:
            problems.append(f"page did not load: {rel}")
        math_state = page.evaluate(JS_WAIT_MATH)
        if math_state == "missing":
            problems.append("math present but MathJax did not load")
        math = page.evaluate(JS_MATH_PROBLEMS)
        report.math = math["count"]
        problems += [f"math not rendered: {text!r}" for text in math["unrendered"][:5]]
        problems += [f"MathJax error: {text!r}" for text in math["errors"][:5]]
        problems += [f"raw TeX visible: {text!r}" for text in math["raw"][:5]]
        images = page.evaluate(JS_BROKEN_IMAGES)
        report.images = images["count"]
        problems += [f"broken image: {src[:120]}" for src in images["broken"]]
        problems += [
            f"figure stored as text, not an image: {text} (was the notebook run with "
            "MPLBACKEND=Agg? use the inline backend)"
            for text in page.evaluate(JS_FIGURE_REPRS)[:5]
        ]
        problems += link_problems(page.evaluate(JS_LINKS), base_url, html_root)
        page.wait_for_load_state("networkidle")
        if shots is not None:
            shot = shots / (rel.removesuffix(".html").replace("/", "__") + ".png")
            page.screenshot(path=str(shot), full_page=True)
    except Exception as error:  # a timeout or a crashed tab is a problem of this page, not the run
        problems.append(f"check failed: {type(error).__name__}: {str(error).splitlines()[0]}")
    finally:
        page.close()
    if load_errors and not blocked:
        problems += load_errors
    report.seconds = time.perf_counter() - start
    return report


def run_checks(html_root: Path, chromium: str, shots: Path | None, toc: Path | None) -> int:
    """Check every page; print a line per page and a summary. Returns the number of problems."""
    from playwright.sync_api import sync_playwright  # the `test` extra; imported late for --help

    if not (html_root / "index.html").is_file():
        raise SystemExit(f"browser check: {html_root}/index.html not found: build the book first")
    pages = book_pages(html_root)
    extra = site_problems(html_root, toc)
    if shots is not None:
        shots.mkdir(parents=True, exist_ok=True)
        for old in shots.glob("*.png"):
            old.unlink()

    total = len(extra)
    for line in extra:
        print(f"FAIL {line}")
    with serve(html_root) as base_url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium, headless=True, args=CHROMIUM_FLAGS
        )
        context = browser.new_context(viewport=VIEWPORT, service_workers="block")
        context.set_default_timeout(PAGE_TIMEOUT_MS)
        try:
            for rel in pages:
                report = check_page(context, base_url, html_root, rel, shots)
                status = "ok  " if not report.problems else "FAIL"
                print(
                    f"{status} {rel:<45} {report.seconds:5.1f} s  {report.images:3d} images  "
                    f"{report.math:3d} math  {len(report.problems)} problems",
                    flush=True,
                )
                for problem in report.problems:
                    print(f"       - {problem}")
                total += len(report.problems)
        finally:
            context.close()
            browser.close()
    print(f"browser check: {len(pages)} pages, {total} problems")
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("html", type=Path, help="the built book, e.g. _build/html")
    parser.add_argument("--toc", type=Path, default=None, help="_toc.yml: every entry needs a page")
    parser.add_argument("--chromium", default="/usr/bin/chromium", help="Chromium executable")
    parser.add_argument("--screenshots", type=Path, default=None, help="folder for screenshots")
    args = parser.parse_args(argv)
    if not Path(args.chromium).is_file():
        raise SystemExit(
            f"browser check: no Chromium at {args.chromium}; install Debian's chromium "
            "(apt-get install chromium) or pass --chromium /path/to/chrome"
        )
    problems = run_checks(args.html.resolve(), args.chromium, args.screenshots, args.toc)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
