"""A hand-written recursive-descent parser for loss expressions (never ``eval``).

Grammar (higher rules bind tighter)::

    expr    := term (('+' | '-') term)*
    term    := unary (('*' | '/') unary)*
    unary   := '-' NUMBER            # a negative constant, unless a '^' follows the number
             | '-' unary
             | power
    power   := atom ('^' unary)?
    atom    := NUMBER | LEAF | NAME '(' expr (',' expr)* ')' | '(' expr ')'

``parse(str(e)) == e`` holds for every tree ``e``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from loss_rl.errors import LossSyntaxError
from loss_rl.expr._nodes import INFIX, LEAVES, OPS, Const, Expr, Leaf, Op

_TOKEN = re.compile(
    r"\s*(?:(?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)|(?P<name>[A-Za-z_][A-Za-z_0-9]*)"
    r"|(?P<sym>[-+*/^(),]))"
)
MAX_LENGTH = 10_000
MAX_DEPTH = 200


@dataclass(frozen=True)
class _Tok:
    kind: str  # "num" | "name" | "sym" | "end"
    text: str
    pos: int


def _tokenize(text: str) -> list[_Tok]:
    toks: list[_Tok] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
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

    def parse(self) -> Expr:
        if self.tok.kind == "end":
            raise self._error("an expression")
        e = self.expr()
        if self.tok.kind != "end":
            raise self._error("an operator or end of input")
        return e

    def expr(self) -> Expr:
        self._enter()
        left = self.term()
        while self.tok.kind == "sym" and self.tok.text in "+-":
            sym = self.tok.text
            self.i += 1
            left = Op(INFIX[sym], (left, self.term()))
        self.depth -= 1
        return left

    def term(self) -> Expr:
        left = self.unary()
        while self.tok.kind == "sym" and self.tok.text in "*/":
            sym = self.tok.text
            self.i += 1
            left = Op(INFIX[sym], (left, self.unary()))
        return left

    def unary(self) -> Expr:
        if self._take("-"):
            nxt = self.tok
            if nxt.kind == "num" and not (
                self.toks[self.i + 1].kind == "sym" and self.toks[self.i + 1].text == "^"
            ):
                self.i += 1
                return Const(-float(nxt.text))
            self._enter()
            e = Op("neg", (self.unary(),))
            self.depth -= 1
            return e
        return self.power()

    def power(self) -> Expr:
        base = self.atom()
        if self._take("^"):
            self._enter()
            e = Op("pow", (base, self.unary()))
            self.depth -= 1
            return e
        return base

    def atom(self) -> Expr:
        tok = self.tok
        if tok.kind == "num":
            self.i += 1
            value = float(tok.text)
            if value == float("inf"):
                raise LossSyntaxError("number is too large", self.text, tok.pos)
            return Const(value)
        if tok.kind == "name":
            self.i += 1
            if tok.text in LEAVES:
                return Leaf(tok.text)
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
            return Op(tok.text, tuple(args))
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
