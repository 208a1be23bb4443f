"""Loaded by schemathesis (SCHEMATHESIS_HOOKS) before a run: works around a CPython 3.11 bug.

CPython 3.11's ast.parse can raise "SystemError: AST constructor recursion depth mismatch"
(python/cpython#106905) when hypothesis parses a lambda's source only to describe it in a
repr. The description is cosmetic, so an unparsable one becomes "<unknown>" (hypothesis's own
fallback) instead of failing the whole operation's test.
"""

from hypothesis.internal import lambda_sources

_describe = lambda_sources._lambda_description


def _describe_or_unknown(f, *args, **kwargs):
    """Hypothesis's lambda description, or its "<unknown>" fallback when ast.parse fails."""
    try:
        return _describe(f, *args, **kwargs)
    except SystemError:
        return "lambda: <unknown>"


lambda_sources._lambda_description = _describe_or_unknown
