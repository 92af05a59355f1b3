"""One module per artifact kind, each with ``render(model, templates) -> {path: bytes}``."""
