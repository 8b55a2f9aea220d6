"""The book's tooling: table of contents, configuration, bibliography, and the browser check's
helpers (page discovery, offline rule, link checking, local server). The browser itself runs in
``make book-check``; nothing here starts Chromium."""

from __future__ import annotations

import importlib.util
import re
import sys
import urllib.error
import urllib.request
from pathlib import Path
from types import ModuleType

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PAPER_KEYS = {
    "nguyen2024laanet", "zhao2021mat", "shiohara2022sbi", "li2020facexray", "rossler2019ffpp",
    "li2020celebdf", "tan2019efficientnet", "zhou2019centernet", "foret2021sam", "dolhansky2020dfdc",
}


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


bc = _load("browser_check", REPO / "tools" / "browser_check.py")


# --- table of contents and configuration -------------------------------------------------------


def test_toc_docnames_walks_parts_chapters_and_sections(tmp_path: Path) -> None:
    toc = tmp_path / "_toc.yml"
    toc.write_text(
        "format: jb-book\nroot: intro.md\nparts:\n"
        "  - caption: A\n    chapters:\n      - file: a/one.ipynb\n"
        "        sections:\n          - file: a/one_b\n"
        "  - caption: B\n    chapters:\n      - file: b/two\n      - url: https://example.org\n"
    )
    assert bc.toc_docnames(toc) == ["intro", "a/one", "a/one_b", "b/two"]


def test_toc_docnames_rejects_a_file_without_root(tmp_path: Path) -> None:
    toc = tmp_path / "_toc.yml"
    toc.write_text("chapters:\n  - file: a\n")
    with pytest.raises(ValueError, match="_toc.yml.*root"):
        bc.toc_docnames(toc)


def test_every_chapter_source_is_in_the_toc() -> None:
    """A notebooks/NN_name.py missing from _toc.yml would silently not be rendered
    (only_build_toc_files), so it is caught here."""
    listed = set(bc.toc_docnames(REPO / "_toc.yml"))
    chapters = {f"notebooks/{p.stem}" for p in (REPO / "notebooks").glob("[0-9][0-9]*.py")}
    assert chapters - listed == set(), "add these chapters to _toc.yml"


def test_book_pages_of_the_toc_exist() -> None:
    for name in bc.toc_docnames(REPO / "_toc.yml"):
        if name.startswith("book/"):
            assert (REPO / f"{name}.md").is_file(), name


def test_config_renders_stored_outputs_offline() -> None:
    config = yaml.safe_load((REPO / "_config.yml").read_text())
    assert config["execute"]["execute_notebooks"] == "off"
    assert config["only_build_toc_files"] is True
    assert "notebooks/*.py" in config["exclude_patterns"]
    assert {".*", "lib", "runs", "_build"} <= set(config["exclude_patterns"])
    sphinx = config["sphinx"]["config"]
    assert "://" not in sphinx["mathjax_path"]  # served from _static, not a CDN
    assert ".cache/book_static" in sphinx["html_static_path"]
    launch = config["launch_buttons"]
    assert launch["thebe"] is False and not launch["binderhub_url"] and not launch["colab_url"]
    for bib in config["bibtex_bibfiles"]:
        assert (REPO / bib).is_file()


# --- bibliography -------------------------------------------------------------------------------


def _bib_keys() -> set[str]:
    text = (REPO / "book" / "references.bib").read_text(encoding="utf-8")
    return set(re.findall(r"^@\w+\{([^,\s]+),", text, flags=re.MULTILINE))


def test_bibliography_parses_and_has_the_papers() -> None:
    pybtex = pytest.importorskip("pybtex.database")
    data = pybtex.parse_file(str(REPO / "book" / "references.bib"))
    assert set(data.entries) == _bib_keys()
    assert PAPER_KEYS <= set(data.entries)
    for key, entry in data.entries.items():
        assert entry.fields.get("title") and entry.fields.get("year"), key
        assert entry.persons.get("author"), key


def test_every_citation_has_a_bib_entry() -> None:
    sources = [*(REPO / "book").glob("*.md"), *(REPO / "notebooks").glob("*.py")]
    cited = set()
    for path in sources:
        for keys in re.findall(r"\{cite(?::\w+)?\}`([^`]+)`", path.read_text(encoding="utf-8")):
            cited |= {key.strip() for key in keys.split(",")}
    assert cited, "the intro cites the papers"
    assert cited - _bib_keys() == set()


# --- browser check helpers ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "safe"),
    [
        ("http://127.0.0.1:8123/book/intro.html", True),
        ("http://localhost:8000/_static/x.css", True),
        ("data:image/png;base64,AAAA", True),
        ("blob:http://127.0.0.1:1/abc", True),
        ("https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js", False),
        ("https://fonts.googleapis.com/css?family=Lato", False),
        ("http://localhost.example.com/x.js", False),
        ("ftp://127.0.0.1/x", False),
    ],
)
def test_offline_rule(url: str, safe: bool) -> None:
    assert bc.is_offline_safe(url) is safe


def _site(root: Path) -> Path:
    (root / "book").mkdir(parents=True)
    (root / "notebooks").mkdir()
    (root / "_static").mkdir()
    (root / "_sources").mkdir()
    (root / "index.html").write_text(
        '<html><head><meta http-equiv="Refresh" content="0; url=book/intro.html" /></head></html>'
    )
    (root / "book" / "intro.html").write_text('<h1 id="top">Intro</h1><a name="legacy"></a>')
    (root / "notebooks" / "01_a.html").write_text('<section id="s-1">x</section>')
    (root / "notebooks" / "index.html").write_text("<p>folder index</p>")
    for skipped in ("search.html", "genindex.html", "_static/x.html", "_sources/y.html"):
        (root / skipped).write_text("<p></p>")
    return root


def test_book_pages_skips_generated_pages_and_the_root_redirect(tmp_path: Path) -> None:
    root = _site(tmp_path)
    assert bc.book_pages(root) == ["book/intro.html", "notebooks/01_a.html", "notebooks/index.html"]
    assert bc.redirect_target(root / "index.html") == "book/intro.html"
    assert bc.redirect_target(root / "book" / "intro.html") is None


def test_link_problems_reports_missing_files_and_anchors(tmp_path: Path) -> None:
    root = _site(tmp_path)
    base = "http://127.0.0.1:9/"
    links = [
        base + "book/intro.html#top",
        base + "book/intro.html#legacy",
        base + "book/intro.html",
        base + "notebooks/",  # a folder means its index.html
        base + "notebooks/01_a.html#s-1",
        base + "notebooks/01_a.html#s-2",
        base + "book/gone.html",
        "https://arxiv.org/abs/2401.13856",  # a link elsewhere is not loaded: fine
    ]
    assert bc.link_problems(links, base, root) == [
        "broken link: book/gone.html (no such file)",
        "broken link: notebooks/01_a.html#s-2 (no anchor #s-2)",
    ]


def test_site_problems_checks_toc_pages_and_redirect(tmp_path: Path) -> None:
    root = _site(tmp_path / "html")
    toc = tmp_path / "_toc.yml"
    toc.write_text("root: book/intro\nchapters:\n  - file: notebooks/01_a\n  - file: notebooks/02_b\n")
    assert bc.site_problems(root, toc) == [f"{toc}: entry 'notebooks/02_b' has no page notebooks/02_b.html"]
    (root / "book" / "intro.html").unlink()
    assert any("redirects to a missing page" in p for p in bc.site_problems(root, None))


def test_serve_answers_on_loopback_only_from_the_folder(tmp_path: Path) -> None:
    root = _site(tmp_path)
    with bc.serve(root) as base:
        assert base.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(base + "book/intro.html", timeout=5) as response:
            assert response.status == 200 and b"Intro" in response.read()
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(base + "book/missing.html", timeout=5)
        assert error.value.code == 404


# --- the local Sphinx extension -----------------------------------------------------------------


def test_duplicate_inline_scripts_are_dropped_once() -> None:
    assets = pytest.importorskip("sphinx.builders.html._assets")
    ext = _load("book_assets", REPO / "book" / "_ext" / "book_assets.py")
    js = assets._JavaScript
    thebe = 'const THEBE_JS_URL = "x"'
    scripts = [
        js("_static/a.js"),
        js(None, body=thebe),
        js("_static/b.js", defer="defer"),
        js("", body=thebe),  # the registry's copy of the same inline script
        js("_static/a.js"),
        js("", body="let other = 1"),
    ]
    context = {"script_files": scripts}
    ext._unique_scripts(None, "page", "page.html", context, None)
    assert context["script_files"] == [scripts[0], scripts[1], scripts[2], scripts[5]]
