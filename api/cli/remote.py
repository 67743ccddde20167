"""How the client commands reach a node: ``--url`` / ``--token`` (or ``FLUX_URL`` / ``FLUX_TOKEN``) made into
a :class:`flux.client.FluxClient`, and every failure made into one line on stderr and a non-zero exit.

Tests hand the commands an in-process HTTP client through the typer context (``obj=Remote(http=...)``);
otherwise the client opens its own connection to ``--url``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated

import httpx
import typer

from flux.client import AsyncFluxClient, FluxClient, FluxError, RetryPolicy, Unavailable
from flux.client.clients import DEFAULT_URL

CLI_RETRY = RetryPolicy(attempts=3, total_s=10.0)  # a command fails within seconds when the node is away
PATIENT_RETRY = RetryPolicy(attempts=12, total_s=120.0)  # export and import: a rebalance on the way is waited out

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


def _remote(ctx: typer.Context) -> Remote:
    return ctx.obj if isinstance(ctx.obj, Remote) else Remote()


def client(ctx: typer.Context, url: str | None, token: str | None, patient: bool = False) -> FluxClient:
    """A blocking client of the node the command names; ``patient`` for long transfers, which wait out
    a node that is briefly unavailable (503 while partitions move) instead of failing within seconds."""
    return FluxClient(url, token=token, retry=PATIENT_RETRY if patient else CLI_RETRY, http=_remote(ctx).http)


def async_client(ctx: typer.Context, url: str | None, token: str | None) -> AsyncFluxClient:
    """An asyncio client of the node the command names (for live changes)."""
    return AsyncFluxClient(url, token=token, retry=CLI_RETRY, transport=_remote(ctx).async_transport)


def reason(exc: BaseException, url: str | None = None) -> str:
    """One line saying why a command failed."""
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
    try:
        yield
    except CommandFailed as exc:
        raise fail(str(exc), exc.code) from None
    except (FluxError, OSError, ValueError) as exc:
        raise fail(reason(exc, url)) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
