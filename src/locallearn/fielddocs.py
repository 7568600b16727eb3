"""The docs of a dataclass's fields: the string literal written right after each field (attribute docstrings).

One source for a field's documentation: the CLI's `--help` and the composed option classes read it from
here instead of keeping a copy.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import textwrap


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """Field name -> its doc, whitespace folded to single spaces; a field without one is left out.

    A field may also carry its doc as `metadata["doc"]` (fields of generated dataclasses, which have no source)."""
    docs = {f.name: f.metadata["doc"] for f in dataclasses.fields(cls) if "doc" in f.metadata}
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):  # generated classes have no source file
        return docs
    body = ast.parse(source).body[0].body  # the class statement's body
    for node, after in zip(body, body[1:], strict=False):
        documented = isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
        literal = isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
        if documented and literal and isinstance(after.value.value, str):
            docs[node.target.id] = " ".join(after.value.value.split())
    return docs
