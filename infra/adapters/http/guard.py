"""One guard for every route: no path or query parameter that no store can keep gets past it.

Starlette percent-decodes with errors="replace", so what arrives is text, but `?agent_id=%00` is
a NUL that PostgreSQL refuses with an error (a 500). Refusing it here, for every route at once,
keeps each route's own parameters simple. It is an app-wide dependency rather than a middleware
so that it can name the path parameter; FastAPI copies app dependencies into each route as the
routers are included, so it is registered before them.
"""
from fastapi import Depends, Request

from infra.adapters.http.errors import Refused
from domain.text import escaped, unstorable


async def refuse_unstorable_parameters(request: Request) -> None:
    """Refuse a path or query parameter, name or value, that no store could keep, naming it."""
    for name, value in [*request.path_params.items(), *request.query_params.multi_items()]:
        if why := unstorable(str(value)):
            raise invalid_parameter(name, why)
        if why := unstorable(name):
            raise invalid_parameter(name, f"its name {why}")


def invalid_parameter(name: str, why: str) -> Refused:
    return Refused(400, "invalid_parameter", f"{escaped(name)}: {why}", [{"field": escaped(name), "problem": why}])


GUARD = Depends(refuse_unstorable_parameters)
