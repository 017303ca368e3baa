"""Roles on event loops of their own, in a process that also serves HTTP and SSE (docs/adr/0004)."""
import asyncio
import threading
from typing import Awaitable, Callable

import uvloop


async def on_own_loop(name: str, role: Callable[[asyncio.Event], Awaitable[None]], stop: asyncio.Event,
                      loops: dict[str, asyncio.AbstractEventLoop] | None = None) -> None:
    """Run role(local_stop) on its own thread and event loop until stop (of this loop) is set.

    `loops` gets the new loop under `name`, for /livez to ask whether it still answers.

    The processor and the projectors each get a loop of their own in a process that also serves
    HTTP and SSE: a busy loop (thousands of SSE subscribers, a big batch to apply) would otherwise
    delay their Kafka heartbeats past the session timeout and cost a rebalance. On threads they
    only compete for the GIL, which Python hands over every few milliseconds.
    """
    main_loop = asyncio.get_running_loop()
    done = main_loop.create_future()

    async def main() -> None:
        if loops is not None:
            loops[name] = asyncio.get_running_loop()
        local_stop = asyncio.Event()
        watcher = asyncio.create_task(relay(stop, local_stop, main_loop))
        try:
            await role(local_stop)
        finally:
            watcher.cancel()

    def thread() -> None:
        try:
            uvloop.run(main())
        except BaseException as error:  # noqa: BLE001 - handed to the awaiting loop
            main_loop.call_soon_threadsafe(settle, done, error)
        else:
            main_loop.call_soon_threadsafe(settle, done, None)
    threading.Thread(target=thread, name=name, daemon=True).start()
    await done


def settle(future: asyncio.Future, error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


async def relay(stop: asyncio.Event, local_stop: asyncio.Event, main_loop: asyncio.AbstractEventLoop) -> None:
    """Set local_stop once stop (an event of another loop) is set."""
    await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(stop.wait(), main_loop))
    local_stop.set()
