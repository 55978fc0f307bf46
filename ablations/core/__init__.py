"""Plumbing every room uses, and nothing above it: one error-line helper and ``ConfigError``
(``errors``), atomic and permission-respecting files and locks (``fileio``), strict YAML
(``yamlio``), the run-status vocabulary (``status``), and the private attributes of other
libraries the harness reads, in one place (``internals``)."""
