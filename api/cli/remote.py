"""How the client commands reach a node: ``--url`` / ``--token`` (or ``FLUX_URL`` / ``FLUX_TOKEN``) made into
a :class:`flux.client.FluxClient`, and every failure made into one line on stderr and a non-zero exit.

Tests hand the commands an in-process HTTP client through the typer context (``obj=Remote(http=...)``);
otherwise the client opens its own connection to ``--url``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:  # imported when a command runs: `flux serve` loads none of the client
    import httpx
    from rich.console import Console

    from flux.client import AsyncFluxClient, FluxClient

DEFAULT_URL = "http://localhost:3000"  # flux.client.clients.DEFAULT_URL
CLI_ATTEMPTS, CLI_TOTAL_S = 3, 10.0  # a command fails within seconds when the node is away
PATIENT_ATTEMPTS, PATIENT_TOTAL_S = 12, 120.0  # export and import: a rebalance on the way is waited out

Url = Annotated[
    str | None,
    typer.Option("--url", envvar="FLUX_URL", help="Flux URL (default FLUX_URL or http://localhost:3000)"),
]
Token = Annotated[
    str | None,
    typer.Option("--token", envvar="FLUX_TOKEN", help="bearer token (default FLUX_TOKEN)", show_default=False),
]


@dataclass
class Remote:
    """What a test puts in the typer context: a ready HTTP client (e.g. Starlette's TestClient of an app)."""

    http: httpx.Client | None = None
    async_transport: httpx.AsyncBaseTransport | None = None


class CommandFailed(Exception):
    """A command's own reason to stop (bad input, nothing found), shown as ``flux: reason``."""

    def __init__(self, reason: str, code: int = 1) -> None:
        super().__init__(reason)
        self.code = code


def on_terminal(stream: IO[str] | None = None) -> bool:
    """Whether ``stream`` (default stderr) is an interactive terminal (colours and bars), not a pipe or a file."""
    try:
        return (sys.stderr if stream is None else stream).isatty()
    except (AttributeError, ValueError):
        return False


def stderr_console() -> Console:
    """A rich console on stderr; colours only when it is a terminal (and ``NO_COLOR`` is unset)."""
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def _remote(ctx: typer.Context) -> Remote:
    return ctx.obj if isinstance(ctx.obj, Remote) else Remote()


def client(ctx: typer.Context, url: str | None, token: str | None, patient: bool = False) -> FluxClient:
    """A blocking client of the node the command names; ``patient`` for long transfers, which wait out
    a node that is briefly unavailable (503 while partitions move) instead of failing within seconds."""
    from flux.client import FluxClient, RetryPolicy

    attempts, total_s = (PATIENT_ATTEMPTS, PATIENT_TOTAL_S) if patient else (CLI_ATTEMPTS, CLI_TOTAL_S)
    retry = RetryPolicy(attempts=attempts, total_s=total_s)
    return FluxClient(url, token=token, retry=retry, http=_remote(ctx).http)


def async_client(ctx: typer.Context, url: str | None, token: str | None) -> AsyncFluxClient:
    """An asyncio client of the node the command names (for live changes)."""
    from flux.client import AsyncFluxClient, RetryPolicy

    retry = RetryPolicy(attempts=CLI_ATTEMPTS, total_s=CLI_TOTAL_S)
    return AsyncFluxClient(url, token=token, retry=retry, transport=_remote(ctx).async_transport)


def reason(exc: BaseException, url: str | None = None) -> str:
    """One line saying why a command failed."""
    import httpx

    from flux.client import FluxError, Unavailable

    if isinstance(exc, Unavailable) and exc.status is None:
        where = f" at {url or DEFAULT_URL}"
        cause = exc.__cause__
        detail = "connection refused" if isinstance(cause, httpx.ConnectError) else exc.message
        return f"cannot reach Flux{where}: {detail}"
    if isinstance(exc, FluxError):
        return f"{exc.status} {type(exc).__name__}: {exc.message}" if exc.status else exc.message
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")
    return str(exc) or type(exc).__name__


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``flux: message`` on stderr; the exit to raise."""
    typer.echo(f"flux: {message}", err=True)
    return typer.Exit(code)


@contextmanager
def reported(url: str | None) -> Iterator[None]:
    """Turn what a command raises (an error answer, no connection, a bad file) into one line and exit 1."""
    from flux.client import FluxError

    try:
        yield
    except CommandFailed as exc:
        raise fail(str(exc), exc.code) from None
    except (FluxError, OSError, ValueError) as exc:
        raise fail(reason(exc, url)) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
