"""The data plane: a small, strict HTTP/1.1 server on uvloop + httptools (DESIGN.md §1)."""
