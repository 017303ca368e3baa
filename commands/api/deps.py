from typing import Annotated

from fastapi import Depends, Request

from commands.auth import AuthError, Principal, authenticate
from commands.bus import CommandBus
from infra.adapters.settings import Settings

# Dependencies are async on purpose: FastAPI runs a plain `def` dependency in a worker thread,
# which costs every request a thread hop (and GIL hand-offs) for work that never blocks.


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_bus(request: Request) -> CommandBus:
    return request.app.state.bus


async def get_principal(request: Request, settings: Annotated[Settings, Depends(get_settings)]) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("missing_token", "send 'Authorization: Bearer <token>'")
    return authenticate(token.strip(), settings.jwt_secret.get_secret_value(), settings.jwt_audience)


SettingsDep = Annotated[Settings, Depends(get_settings)]
BusDep = Annotated[CommandBus, Depends(get_bus)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
