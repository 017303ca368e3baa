"""The command side's services as route dependencies (set on app.state by bootstrap)."""
from typing import Annotated

from fastapi import Depends, Request

from commands.bus import CommandBus


async def get_bus(request: Request) -> CommandBus:
    return request.app.state.bus


BusDep = Annotated[CommandBus, Depends(get_bus)]
