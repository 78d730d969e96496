"""What the command line accepts, checked at the edge: option types with stated ranges, and the
group class that turns click's usage errors into codesign's one-line ``error: ...``.

click prints a usage error as three lines ("Usage: ...", "Try ...", "Error: ..."); codesign's own
errors are one line on stderr and a non-zero exit, and a script or a user reading a CI log should
not have to tell the two apart.
"""

from __future__ import annotations

import math
import re

import click

# The seed reaches numpy's and torch's generators, which take 0..2**32-1.
SEED = click.IntRange(0, 2**32 - 1)
# Every precision a candidate can be exported at (toolchain.search.candidate.PRECISIONS; a test
# keeps the two in step without importing numpy at start-up).
PRECISIONS = ("fp32", "int8-dynamic", "int8-static", "int8-head")


class FiniteFloatRange(click.FloatRange):
    """A FloatRange that also refuses nan and inf (click's own lets both through: ``nan < 0`` is
    false, so ``--max-latency-ms nan`` passes a ``min=0`` check)."""

    def convert(self, value, param, ctx):
        rv = click.types.FloatParamType.convert(self, value, param, ctx)
        if not math.isfinite(rv):
            self.fail(f"{value} is not a finite number; use one in the range {self._describe_range()}",
                      param, ctx)
        return super().convert(rv, param, ctx)


def positive() -> FiniteFloatRange:
    """A budget or a scale: strictly positive and finite (leave the option out for none)."""
    return FiniteFloatRange(min=0.0, min_open=True)


class OneLineUsageError(click.ClickException):
    """A usage error already rendered as codesign's one line."""

    exit_code = 2

    def show(self, file=None) -> None:
        click.secho(f"error: {self.message}", fg="red", err=True)


def one_line(exc: click.UsageError) -> OneLineUsageError:
    path = exc.ctx.command_path if exc.ctx is not None else "codesign"
    msg = " ".join(exc.format_message().split()).rstrip(".")
    # "No such option '--x'. Did you mean '--y'?" and "... (Did you mean one of: ...?)"
    msg = re.sub(r"\.\s*\(?Did you mean (.*?)\?\)?$", r" (did you mean \1?)", msg)
    msg = msg[:1].lower() + msg[1:]
    return OneLineUsageError(f"{path}: {msg}; see '{path} --help'")


class CodesignGroup(click.Group):
    """The top-level group. Every subcommand (nested groups too) is parsed inside this group's
    ``invoke``, so catching ``UsageError`` here and in ``make_context`` covers the whole tree."""

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.exceptions.NoArgsIsHelpError:
            raise  # a bare group prints its help; that is not an error to shorten
        except click.UsageError as exc:
            raise one_line(exc) from exc

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except click.exceptions.NoArgsIsHelpError:
            raise
        except click.UsageError as exc:
            raise one_line(exc) from exc
