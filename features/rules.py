"""Row rules: conditions on a frame's columns that a config may hold as plain data.

A config's ``outliers`` entry names the rows that leave the training folds. Handing that text to
``DataFrame.eval`` or ``DataFrame.query`` would let a config run code (pandas resolves ``@`` names,
attributes and calls), so :class:`RowRule` parses a tiny grammar of its own and evaluates it with
numpy. Nothing here calls ``eval``, ``exec``, ``compile`` or pandas' expression engine: Python's
parser only builds a syntax tree, which is checked node by node against a short whitelist.

Imports only numpy, pandas and the standard library.
"""

from __future__ import annotations

import ast
import difflib
import keyword
import operator
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union

import numpy as np
import pandas as pd

__all__ = ["RowRule"]

MAX_RULE_LENGTH = 10_000  # characters of rule text
MAX_DEPTH = 100  # nesting of and / or / not / parentheses

_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}
_AST_OPS: dict[type, str] = {
    ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!=",
}
_ORDERING = {"<", "<=", ">", ">="}

# The name a refused syntax tree node is given in the error message.
_BIN_SYMBOLS: dict[type, str] = {
    ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%",
    ast.Pow: "**", ast.MatMult: "@", ast.LShift: "<<", ast.RShift: ">>", ast.BitAnd: "&",
    ast.BitOr: "|", ast.BitXor: "^",
}
_REFUSED: dict[type, str] = {  # for "rule: ... not allowed"
    ast.Attribute: "attribute access ('.') is",
    ast.Call: "function calls are",
    ast.Subscript: "subscripts ('[...]') are",
    ast.Slice: "slices are",
    ast.Lambda: "lambda is",
    ast.JoinedStr: "f-strings are",
    ast.FormattedValue: "f-strings are",
    ast.Starred: "starred expressions ('*') are",
    ast.NamedExpr: "assignment expressions (':=') are",
    ast.IfExp: "conditional expressions ('x if c else y') are",
    ast.ListComp: "comprehensions are",
    ast.SetComp: "comprehensions are",
    ast.DictComp: "comprehensions are",
    ast.GeneratorExp: "generator expressions are",
    ast.List: "lists are",
    ast.Tuple: "tuples are",
    ast.Set: "sets are",
    ast.Dict: "dicts are",
    ast.Await: "await is",
    ast.Yield: "yield is",
    ast.YieldFrom: "yield is",
}


# --- the parsed rule: a small immutable tree ---------------------------------------------------


@dataclass(frozen=True)
class _Column:
    name: str


@dataclass(frozen=True)
class _Literal:
    value: int | float | str


@dataclass(frozen=True)
class _Compare:
    operands: tuple[_Column | _Literal, ...]  # a chain: a < b <= c is (a, b, c) with ("<", "<=")
    ops: tuple[str, ...]


@dataclass(frozen=True)
class _And:
    items: tuple[_Node, ...]


@dataclass(frozen=True)
class _Or:
    items: tuple[_Node, ...]


@dataclass(frozen=True)
class _Not:
    item: _Node


_Node = Union[_Column, _Compare, _And, _Or, _Not]  # noqa: UP007 (a runtime alias on 3.11)

# Precedence for printing: a child binding more loosely than its parent gets parentheses.
_PRECEDENCE = {_Or: 1, _And: 2, _Not: 3, _Compare: 4, _Column: 5}


# --- parsing -----------------------------------------------------------------------------------


def _refuse(what: str) -> ValueError:
    """``what`` carries its verb: "the literal None is", "f-strings are"."""
    return ValueError(f"rule: {what} not allowed")


def _scan(text: str) -> tuple[str, dict[str, str]]:
    """Replace backtick-quoted names by placeholders and outside-string whitespace by spaces.

    Returns the text for Python's parser and the placeholder -> column name map. String literals
    are copied verbatim (a backtick or ``#`` inside quotes is text). ``@`` (pandas' variable
    reference) and ``#`` (a comment that would silently cut the rule short) are refused here.
    """
    prefix = "_rowrule_col"
    while prefix in text:
        prefix += "_"
    out: list[str] = []
    names: dict[str, str] = {}
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if char in "'\"":
            quote = text[i : i + 3] if text[i : i + 3] in ("'''", '"""') else char
            j = i + len(quote)
            while j < n and not text.startswith(quote, j):
                j += 2 if text[j] == "\\" else 1
            if j >= n:
                raise ValueError("rule: unterminated string literal")
            j += len(quote)
            out.append(text[i:j])
            i = j
        elif char == "`":
            j = text.find("`", i + 1)
            if j < 0:
                raise ValueError("rule: unterminated backtick-quoted column name")
            name = text[i + 1 : j]
            if not name:
                raise ValueError("rule: empty backtick-quoted column name")
            placeholder = f"{prefix}{len(names)}"
            names[placeholder] = name
            out.append(f" {placeholder} ")
            i = j + 1
        elif char == "@":
            raise _refuse("'@' (a reference to a Python variable) is")
        elif char == "#":
            raise _refuse("'#' (a comment) is")
        elif char in "\r\n\t\f\v":
            out.append(" ")
            i += 1
        else:
            out.append(char)
            i += 1
    return "".join(out), names


def _parse_text(text: str) -> _Node:
    if len(text) > MAX_RULE_LENGTH:
        raise ValueError(f"rule: longer than {MAX_RULE_LENGTH} characters")
    source, names = _scan(text)
    source = source.strip()
    if not source:
        raise ValueError("rule: empty")
    try:
        tree = ast.parse(source, mode="eval")  # builds a syntax tree; nothing is run
    except SyntaxError as exc:
        shown = text if len(text) <= 80 else text[:77] + "..."
        raise ValueError(f"rule: invalid syntax in {shown!r}: {exc.msg}") from None
    except (RecursionError, MemoryError):
        raise ValueError("rule: nested too deeply") from None
    return _Converter(names).condition(tree.body, 0)


class _Converter:
    """Turns a whitelisted Python syntax tree into a rule tree; refuses every other node."""

    def __init__(self, names: Mapping[str, str]):
        self.names = names

    def condition(self, node: ast.AST, depth: int) -> _Node:
        """A node in boolean position: and / or / not, a comparison, or a (boolean) column."""
        if depth > MAX_DEPTH:
            raise ValueError("rule: nested too deeply")
        if isinstance(node, ast.BoolOp):
            items = [self.condition(value, depth + 1) for value in node.values]
            kind = _And if isinstance(node.op, ast.And) else _Or
            flat: list[_Node] = []
            for item in items:  # (a and b) and c is a and b and c
                flat.extend(item.items if isinstance(item, kind) else [item])
            return kind(tuple(flat))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return _Not(self.condition(node.operand, depth + 1))
        if isinstance(node, ast.Compare):
            return self.compare(node)
        if isinstance(node, ast.Name):
            return self.column(node)
        if isinstance(node, ast.Constant) or (isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd)):
            literal = self.literal(node)
            raise ValueError(f"rule: a constant ({_format_literal(literal.value)}) is not a condition")
        raise self.refused(node)

    def compare(self, node: ast.Compare) -> _Compare:
        ops = []
        for op in node.ops:
            if type(op) not in _AST_OPS:
                symbol = {ast.In: "in", ast.NotIn: "not in", ast.Is: "is", ast.IsNot: "is not"}.get(type(op), type(op).__name__)
                raise _refuse(f"the comparison '{symbol}' is")
            ops.append(_AST_OPS[type(op)])
        operands = tuple(self.operand(item) for item in [node.left, *node.comparators])
        for left, op, right in zip(operands, ops, operands[1:], strict=False):
            if isinstance(left, _Literal) and isinstance(right, _Literal):
                raise ValueError(
                    f"rule: the comparison {_format_literal(left.value)} {op} {_format_literal(right.value)} uses no column"
                )
        return _Compare(operands, tuple(ops))

    def operand(self, node: ast.AST) -> _Column | _Literal:
        """One side of a comparison: a column or a literal."""
        if isinstance(node, ast.Name):
            return self.column(node)
        if isinstance(node, ast.Constant) or (isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd)):
            return self.literal(node)
        if isinstance(node, ast.Compare | ast.BoolOp) or (isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not)):
            raise _refuse("a condition as a comparison operand is")
        raise self.refused(node)

    def column(self, node: ast.Name) -> _Column:
        return _Column(self.names.get(node.id, node.id))

    def literal(self, node: ast.AST) -> _Literal:
        sign = 1
        if isinstance(node, ast.UnaryOp):
            sign = -1 if isinstance(node.op, ast.USub) else 1
            symbol = "-" if sign < 0 else "+"
            node = node.operand
            if not (isinstance(node, ast.Constant) and _is_number(node.value)):
                raise _refuse(f"unary '{symbol}' on anything but a number is")
        if not isinstance(node, ast.Constant):
            raise self.refused(node)
        value = node.value
        if isinstance(value, bool) or value is None:
            raise _refuse(f"the literal {value!r} is")
        if isinstance(value, str):
            return _Literal(value)
        if not _is_number(value):
            raise _refuse(f"a {type(value).__name__} literal is")
        return _Literal(sign * value)

    @staticmethod
    def refused(node: ast.AST) -> ValueError:
        if isinstance(node, ast.BinOp):
            symbol = _BIN_SYMBOLS.get(type(node.op), type(node.op).__name__)
            hint = {"&": " (use 'and')", "|": " (use 'or')"}.get(symbol, "")
            return ValueError(f"rule: the operator '{symbol}' is not allowed{hint}")
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Invert):
            return ValueError("rule: the operator '~' is not allowed (use 'not')")
        return _refuse(_REFUSED.get(type(node), f"{type(node).__name__} expressions are"))


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _parse_tables(tables: Sequence[Any]) -> _Node:
    """The TOML form: ``[[outliers]]`` tables of column, op, value, all of which must hold."""
    if not tables:
        raise ValueError("rule: an empty list of conditions")
    conditions: list[_Node] = []
    for index, table in enumerate(tables):
        where = f"rule condition {index + 1}"
        if not isinstance(table, Mapping):
            raise ValueError(f"{where}: must be a table with column, op and value, not {type(table).__name__}")
        keys = set(table)
        if keys != {"column", "op", "value"}:
            extra, missing = sorted(map(str, keys - {"column", "op", "value"})), sorted({"column", "op", "value"} - keys)
            raise ValueError(f"{where}: " + (f"unknown key {extra[0]!r}" if extra else f"missing key {missing[0]!r}")
                             + " (keys: column, op, value)")
        column, op, value = table["column"], table["op"], table["value"]
        if not isinstance(column, str) or not column:
            raise ValueError(f"{where}: column must be a non-empty string")
        if op not in _OPS:
            raise ValueError(f"{where}: op {op!r} is not one of {', '.join(_OPS)}")
        if not (isinstance(value, str) or _is_number(value)):
            raise ValueError(f"{where}: value must be a number or a string, not {type(value).__name__}")
        conditions.append(_Compare((_Column(column), _Literal(value)), (op,)))
    return conditions[0] if len(conditions) == 1 else _And(tuple(conditions))


def _check_literals(node: _Node) -> None:
    for literal in _walk(node, _Literal):
        if isinstance(literal.value, float) and np.isnan(literal.value):
            raise ValueError("rule: NaN is not a value to compare with (every comparison with it is False)")


def _walk(node: Any, kind: type) -> Iterable[Any]:
    if isinstance(node, kind):
        yield node
    children: Iterable[Any] = ()
    if isinstance(node, _Compare):
        children = node.operands
    elif isinstance(node, _And | _Or):
        children = node.items
    elif isinstance(node, _Not):
        children = (node.item,)
    for child in children:
        yield from _walk(child, kind)


# --- printing ----------------------------------------------------------------------------------


def _format_name(name: str) -> str:
    bare = (
        name.isidentifier()
        and not keyword.iskeyword(name)
        and unicodedata.normalize("NFKC", name) == name
        and not name.startswith("_rowrule_col")
    )
    return name if bare else f"`{name}`"


def _format_literal(value: int | float | str) -> str:
    if isinstance(value, float) and np.isinf(value):
        return "1e999" if value > 0 else "-1e999"
    return repr(value)


def _format(node: _Node | _Literal, parent: int = 0) -> str:
    if isinstance(node, _Column):
        return _format_name(node.name)
    if isinstance(node, _Literal):
        return _format_literal(node.value)
    own = _PRECEDENCE[type(node)]
    if isinstance(node, _Compare):
        parts = [_format(node.operands[0])]
        for op, operand in zip(node.ops, node.operands[1:], strict=True):
            parts += [op, _format(operand)]
        text = " ".join(parts)
    elif isinstance(node, _Not):
        text = f"not {_format(node.item, own)}"
    else:
        joiner = " and " if isinstance(node, _And) else " or "
        text = joiner.join(_format(item, own + 1) for item in node.items)  # (a or b) or c flattened
    return f"({text})" if own < parent else text


# --- evaluation --------------------------------------------------------------------------------


@dataclass
class _Values:
    kind: str  # "number", "text" (strings or other Python objects), "category"
    values: Any  # an ndarray, or a scalar for a literal
    missing: np.ndarray | bool
    label: str  # for messages


def _column_values(frame: pd.DataFrame, name: str) -> _Values:
    series = frame[name]
    if isinstance(series, pd.DataFrame):
        raise ValueError(f"rule: column {name!r} appears more than once in the frame")
    series = series if isinstance(series, pd.Series) else pd.Series(series)
    label = f"column {name!r} ({series.dtype})"
    missing = series.isna().to_numpy(dtype=bool)
    dtype = series.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        return _Values("category", series.astype(object).to_numpy(dtype=object), missing, label)
    if pd.api.types.is_numeric_dtype(dtype):  # numbers and booleans, numpy or nullable
        numpy_dtype = np.dtype(getattr(dtype, "numpy_dtype", dtype))
        fill = np.nan if numpy_dtype.kind in "fc" else 0
        return _Values("number", series.to_numpy(dtype=numpy_dtype, na_value=fill), missing, label)
    if pd.api.types.is_string_dtype(dtype) or pd.api.types.is_object_dtype(dtype):
        return _Values("text", series.to_numpy(dtype=object, na_value=None), missing, label)
    raise ValueError(f"rule: {label} is of a type rules cannot compare")


def _literal_values(literal: _Literal) -> _Values:
    kind = "text" if isinstance(literal.value, str) else "number"
    return _Values(kind, literal.value, False, _format_literal(literal.value))


def _compare_pair(left: _Values, op: str, right: _Values, size: int) -> np.ndarray:
    numbers = {left.kind, right.kind} == {"number"}
    if "number" in (left.kind, right.kind) and not numbers:
        raise ValueError(f"rule: cannot compare {left.label} {op} {right.label}: a number with a non-number")
    if op in _ORDERING and "category" in (left.kind, right.kind):
        raise ValueError(f"rule: {op} on categorical {left.label if left.kind == 'category' else right.label}: "
                         "only == and != compare categories")
    missing = np.broadcast_to(np.logical_or(left.missing, right.missing), (size,))
    if numbers:
        with np.errstate(invalid="ignore"):
            result = np.asarray(_OPS[op](left.values, right.values), dtype=bool)
        result = np.broadcast_to(result, (size,))
    else:  # strings and other objects: compared one by one, where neither side is missing
        present = ~missing
        pick = lambda side: side.values[present] if isinstance(side.values, np.ndarray) else side.values  # noqa: E731
        result = np.zeros(size, dtype=bool)
        try:
            result[present] = np.asarray(_OPS[op](pick(left), pick(right)), dtype=bool)
        except TypeError:
            raise ValueError(f"rule: cannot compare {left.label} {op} {right.label}") from None
    # A missing value compares False, except under != where it compares True: as numpy and pandas
    # do for NaN.
    return result | missing if op == "!=" else result & ~missing


def _evaluate(node: _Node, frame: pd.DataFrame, size: int) -> np.ndarray:
    if isinstance(node, _Column):
        values = _column_values(frame, node.name)
        if not pd.api.types.is_bool_dtype(frame[node.name].dtype):
            raise ValueError(f"rule: {values.label} is used as a condition but is not boolean; compare it")
        return np.asarray(values.values, dtype=bool) & ~values.missing
    if isinstance(node, _Not):
        return ~_evaluate(node.item, frame, size)
    if isinstance(node, _And | _Or):
        combine = np.logical_and if isinstance(node, _And) else np.logical_or
        result = _evaluate(node.items[0], frame, size)
        for item in node.items[1:]:
            result = combine(result, _evaluate(item, frame, size))
        return result
    sides = [
        _column_values(frame, operand.name) if isinstance(operand, _Column) else _literal_values(operand)
        for operand in node.operands
    ]
    result = np.ones(size, dtype=bool)
    for left, op, right in zip(sides, node.ops, sides[1:], strict=False):  # a < b < c: a < b and b < c
        result &= _compare_pair(left, op, right, size)
    return result


# --- the public class --------------------------------------------------------------------------


class RowRule:
    """A condition on a frame's columns, parsed from config data and evaluated without ``eval``.

    The rule is a tiny language, never Python: column names, literals, comparisons, ``and``,
    ``or``, ``not`` and parentheses. Python's parser builds the syntax tree (``ast.parse``), which
    is then checked against a whitelist; anything else (attribute access, calls, subscripts,
    ``@`` variables, lambdas, f-strings, arithmetic, ...) raises ``ValueError``. Nothing is ever
    run: :meth:`mask` compares the frame's columns with numpy.

    Parameters
    ----------
    spec : str, RowRule or sequence of mappings
        Either rule text, e.g. ``"GrLivArea > 4000 and SalePrice < 300000"``, or tables
        ``[{"column": "GrLivArea", "op": ">", "value": 4000}, ...]`` that must all hold (the TOML
        form ``[[outliers]]``).

        Rule text grammar:

        - column names: bare identifiers (``GrLivArea``), or backtick-quoted (```1stFlrSF```,
          ```Lot Area```) for names that are not identifiers or are Python keywords;
        - literals: ints, floats (``3.5``, ``1e5``, ``-2``) and quoted strings (``'RL'``);
          ``True``, ``False``, ``None`` and NaN are refused;
        - comparisons ``< <= > >= == !=``, chained as in Python (``1000 < GrLivArea <= 4000``);
          every comparison must involve a column;
        - ``and``, ``or``, ``not`` with Python's precedence, and parentheses;
        - a bare column stands for a condition only when the column is boolean.

        The operator ``op`` of a table is one of ``< <= > >= == !=`` and its ``value`` a number
        or a string.

    Attributes
    ----------
    columns : tuple of str
        The column names the rule uses, in order of first appearance.

    Notes
    -----
    :meth:`mask` matches ``DataFrame.eval`` on the same text: a missing value (NaN, None,
    ``pd.NA``) compares False under every operator but ``!=``, where it compares True; ``not``
    negates the result as it stands. Where pandas would return missing values (nullable dtypes)
    the rule follows the same NaN convention and always returns plain booleans. Unlike pandas,
    comparing a number with a string, or ordering a categorical, raises ``ValueError`` rather
    than flagging no rows silently.

    Examples
    --------
    >>> import pandas as pd
    >>> rule = RowRule.parse("GrLivArea > 4000 and SalePrice < 300000")
    >>> rule.columns
    ('GrLivArea', 'SalePrice')
    >>> frame = pd.DataFrame({"GrLivArea": [4500, 4500, 1200], "SalePrice": [160000, 700000, 90000]})
    >>> rule.mask(frame)
    array([ True, False, False])
    >>> str(RowRule.parse([{"column": "1stFlrSF", "op": ">=", "value": 2000}]))
    '`1stFlrSF` >= 2000'
    """

    __slots__ = ("_tree", "_columns")

    def __init__(self, spec: str | RowRule | Sequence[Mapping[str, Any]]):
        if isinstance(spec, RowRule):
            tree = spec._tree
        elif isinstance(spec, str):
            tree = _parse_text(spec)
        elif isinstance(spec, Sequence) and not isinstance(spec, bytes | bytearray):
            tree = _parse_tables(spec)
        else:
            raise ValueError(f"rule: must be a string or a list of tables, not {type(spec).__name__}")
        _check_literals(tree)
        self._tree: _Node = tree
        self._columns = tuple(dict.fromkeys(column.name for column in _walk(tree, _Column)))

    @classmethod
    def parse(cls, spec: str | RowRule | Sequence[Mapping[str, Any]]) -> RowRule:
        """Parse rule text or a list of condition tables (see the class docstring).

        Parameters
        ----------
        spec : str, RowRule or sequence of mappings
            The rule. A ``RowRule`` is returned as it is.

        Returns
        -------
        RowRule

        Raises
        ------
        ValueError
            On a syntax error or anything outside the grammar, with a one-line message naming it.
        """
        return spec if isinstance(spec, cls) else cls(spec)

    @property
    def columns(self) -> tuple[str, ...]:
        return self._columns

    def check_columns(self, available: Iterable[str]) -> None:
        """Raise ``ValueError`` naming the first column the rule uses that is not in ``available``.

        Parameters
        ----------
        available : iterable of str
            The column names at hand, e.g. ``frame.columns`` (plus the target's name).
        """
        known = [str(name) for name in available]
        present = set(known)
        for name in self._columns:
            if name not in present:
                close = difflib.get_close_matches(name, known, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ValueError(f"rule {str(self)!r}: unknown column {name!r}{hint}")

    def mask(self, frame: pd.DataFrame) -> np.ndarray:
        """The rows of ``frame`` the rule holds for.

        Parameters
        ----------
        frame : pandas.DataFrame
            Holds every column in :attr:`columns`.

        Returns
        -------
        numpy.ndarray of bool, shape (len(frame),)

        Raises
        ------
        ValueError
            An unknown column, a column of a type the rule cannot compare (a number with a
            string, say), or a non-boolean column used as a condition.
        """
        self.check_columns(frame.columns)
        size = len(frame)
        return np.array(_evaluate(self._tree, frame, size), dtype=bool).reshape(size)

    def __str__(self) -> str:
        return _format(self._tree)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RowRule) and self._tree == other._tree

    def __hash__(self) -> int:
        return hash(self._tree)
