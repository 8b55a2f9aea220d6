# Book build and browser check (owned by the book tooling).
.PHONY: book-html book-check
book-html: $(STAMP)
	$(VENV)/bin/jupyter-book build . --warningiserror --keep-going

book-check: book-html
	@echo "browser check: not yet"
