# Book build and browser check (owned by the book tooling; included by the main Makefile).
#   make book-html    render the executed notebooks (stored outputs, nothing is run) to _build/html;
#                     every Sphinx warning is an error
#   make book-check   book-html, then open every page in a headless Chromium (tools/browser_check.py)
.PHONY: book-html book-check book-mathjax

# MathJax is served from a local copy so that math renders offline. It comes from npm once, into
# .cache/ (git-ignored); _config.yml adds .cache/book_static to html_static_path and points
# mathjax_path at mathjax/tex-mml-chtml.js.
MATHJAX_VERSION := 3.2.2
MATHJAX_NPM := .cache/npm/node_modules/mathjax/es5
MATHJAX_DIR := .cache/book_static/mathjax
MATHJAX_READY := $(MATHJAX_DIR)/.mathjax-$(MATHJAX_VERSION)
# The combined TeX/MathML -> CHTML component, its web fonts, and what it loads on demand
# (TeX extensions through autoload; the menu's accessibility tools and speech maps).
MATHJAX_PARTS := tex-mml-chtml.js input/tex/extensions input/mml/extensions \
  output/chtml/fonts/woff-v2 a11y ui sre
CHROMIUM ?= /usr/bin/chromium

$(MATHJAX_READY):
	command -v npm >/dev/null || { echo "book: npm is needed once, to fetch MathJax $(MATHJAX_VERSION) (Debian: apt-get install npm)" >&2; exit 1; }
	npm install --prefix .cache/npm --no-save --no-audit --no-fund --loglevel=error mathjax@$(MATHJAX_VERSION)
	rm -rf $(MATHJAX_DIR) && mkdir -p $(MATHJAX_DIR)
	(cd $(MATHJAX_NPM) && cp -r --parents $(MATHJAX_PARTS) $(abspath $(MATHJAX_DIR))/)
	touch $@

book-mathjax: $(MATHJAX_READY)

# A clean build each time: Sphinx re-reports warnings only for the pages it rebuilds.
book-html: $(STAMP) $(MATHJAX_READY)
	rm -rf _build/html _build/.doctrees _build/jupyter_execute
	$(VENV)/bin/jupyter-book build . --warningiserror --keep-going

book-check: book-html
	if [ ! -x "$(CHROMIUM)" ]; then
	  echo "book-check: $(CHROMIUM) not found; installing Debian's chromium with apt-get"
	  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium fonts-liberation; } \
	    || { echo "book-check: could not install chromium (apt-get needs root); install it, or set CHROMIUM=/path/to/chrome" >&2; exit 1; }
	fi
	$(PY) tools/browser_check.py _build/html --toc _toc.yml --chromium $(CHROMIUM) --screenshots _build/screenshots
