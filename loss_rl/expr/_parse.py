"""A hand-written recursive-descent parser for loss expressions (never ``eval``).

Grammar (higher rules bind tighter)::

    expr    := term (('+' | '-') term)*
    term    := unary (('*' | '/') unary)*
    unary   := '-' NUMBER            # a negative constant, unless a '^' follows the number
             | '-' unary
             | power
    power   := atom ('^' unary)?
    atom    := NUMBER | LEAF | NAME '(' expr (',' expr)* ')' | '(' expr ')'

``parse(str(e)) == e`` holds for every tree ``e`` no deeper than :data:`MAX_DEPTH`. The depth limit
(of the tree and of the nesting of the text) keeps parsing and every recursive walk of a parsed tree
far from Python's recursion limit, so hostile input fails with a :class:`LossSyntaxError`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from loss_rl.errors import LossSyntaxError
from loss_rl.expr._nodes import INFIX, LEAVES, OPS, Const, Expr, Leaf, Op

# ASCII digits only: `\d` would also accept other scripts' digits, which `float` reads silently.
_TOKEN = re.compile(
    r"\s*(?:(?P<num>(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)"
    r"|(?P<name>[A-Za-z_][A-Za-z_0-9]*)|(?P<sym>[-+*/^(),]))"
)
_BLANK = re.compile(r"\s*\Z")
MAX_LENGTH = 10_000
# A nesting level costs the recursive-descent parser up to five stack frames, so 100 levels stay
# well inside Python's default recursion limit of 1000 even when called from a deep stack.
MAX_DEPTH = 100

# A parsed sub-expression and its tree depth (tracked here: `Expr.depth()` is itself recursive).
_Parsed = tuple[Expr, int]


@dataclass(frozen=True)
class _Tok:
    kind: str  # "num" | "name" | "sym" | "end"
    text: str
    pos: int


def _tokenize(text: str) -> list[_Tok]:
    toks: list[_Tok] = []
    pos = 0
    while pos < len(text):
        if _BLANK.match(text, pos):
            break
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            start = pos + (len(text[pos:]) - len(text[pos:].lstrip()))
            raise LossSyntaxError(f"unexpected character {text[start]!r}", text, start)
        kind = m.lastgroup or "sym"
        toks.append(_Tok(kind, m.group(kind), m.start(kind)))
        pos = m.end()
    toks.append(_Tok("end", "", len(text)))
    return toks


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = _tokenize(text)
        self.i = 0
        self.depth = 0

    @property
    def tok(self) -> _Tok:
        return self.toks[self.i]

    def _error(self, expected: str, tok: _Tok | None = None) -> LossSyntaxError:
        tok = tok or self.tok
        got = "end of input" if tok.kind == "end" else repr(tok.text)
        return LossSyntaxError(f"expected {expected}, got {got}", self.text, tok.pos)

    def _take(self, text: str) -> bool:
        if self.tok.kind == "sym" and self.tok.text == text:
            self.i += 1
            return True
        return False

    def _expect(self, text: str, expected: str | None = None) -> None:
        if not self._take(text):
            raise self._error(expected or repr(text))

    def _enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise LossSyntaxError(
                f"expression nests deeper than {MAX_DEPTH} levels", self.text, self.tok.pos
            )

    def _op(self, name: str, args: list[_Parsed], tok: _Tok) -> _Parsed:
        depth = 1 + max(d for _, d in args)
        if depth > MAX_DEPTH:
            raise LossSyntaxError(
                f"expression tree is deeper than {MAX_DEPTH} levels", self.text, tok.pos
            )
        return Op(name, tuple(e for e, _ in args)), depth

    def _number(self, tok: _Tok, sign: float = 1.0) -> _Parsed:
        value = sign * float(tok.text)
        if not math.isfinite(value):
            raise LossSyntaxError("number is too large", self.text, tok.pos)
        return Const(value), 1

    def parse(self) -> Expr:
        if self.tok.kind == "end":
            raise self._error("an expression")
        e, _ = self.expr()
        if self.tok.kind != "end":
            raise self._error("an operator or end of input")
        return e

    def expr(self) -> _Parsed:
        self._enter()
        left = self.term()
        while self.tok.kind == "sym" and self.tok.text in "+-":
            tok = self.tok
            self.i += 1
            left = self._op(INFIX[tok.text], [left, self.term()], tok)
        self.depth -= 1
        return left

    def term(self) -> _Parsed:
        left = self.unary()
        while self.tok.kind == "sym" and self.tok.text in "*/":
            tok = self.tok
            self.i += 1
            left = self._op(INFIX[tok.text], [left, self.unary()], tok)
        return left

    def unary(self) -> _Parsed:
        minus = self.tok
        if self._take("-"):
            nxt = self.tok
            if nxt.kind == "num" and not (
                self.toks[self.i + 1].kind == "sym" and self.toks[self.i + 1].text == "^"
            ):
                self.i += 1
                return self._number(nxt, -1.0)
            self._enter()
            e = self._op("neg", [self.unary()], minus)
            self.depth -= 1
            return e
        return self.power()

    def power(self) -> _Parsed:
        base = self.atom()
        caret = self.tok
        if self._take("^"):
            self._enter()
            e = self._op("pow", [base, self.unary()], caret)
            self.depth -= 1
            return e
        return base

    def atom(self) -> _Parsed:
        tok = self.tok
        if tok.kind == "num":
            self.i += 1
            return self._number(tok)
        if tok.kind == "name":
            self.i += 1
            if tok.text in LEAVES:
                return Leaf(tok.text), 1
            if tok.text not in OPS or OPS[tok.text].symbol is not None:
                known = [n for n, s in OPS.items() if s.symbol is None]
                raise LossSyntaxError(
                    f"unknown name {tok.text!r}; leaves are {', '.join(LEAVES)}; "
                    f"functions are {', '.join(known)}",
                    self.text,
                    tok.pos,
                )
            spec = OPS[tok.text]
            self._expect("(", f"'(' after function {tok.text!r}")
            args = [self.expr()]
            while self._take(","):
                args.append(self.expr())
            close = self.tok
            self._expect(")", "',' or ')'")
            if len(args) != spec.arity:
                raise LossSyntaxError(
                    f"function {tok.text!r} takes {spec.arity} argument(s), got {len(args)}",
                    self.text,
                    close.pos,
                )
            return self._op(tok.text, args, tok)
        if self._take("("):
            e = self.expr()
            self._expect(")", "')'")
            return e
        raise self._error("a number, a leaf, a function or '('")


def parse(text: str) -> Expr:
    """Parse a loss expression written in the loss language.

    Args:
        text: e.g. ``"-(1 - p_y)^2 * log_p_y"`` or ``"(1 - p_y^0.7) / 0.7"``.

    Returns:
        The expression tree.

    Raises:
        LossSyntaxError: if the text is malformed; the message names the position and what was
            expected there.
    """
    if not isinstance(text, str):
        raise LossSyntaxError(f"expected a string, got {type(text).__name__}", "", 0)
    if len(text) > MAX_LENGTH:
        raise LossSyntaxError(f"expression longer than {MAX_LENGTH} characters", "", 0)
    return _Parser(text).parse()
