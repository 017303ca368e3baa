"""The one place that builds settings, clients, the processor and the API for a process."""
import asyncio
import logging
import signal

import uvicorn

from commands.api.app import create_app
from commands.processor import CommandProcessor
from infra.settings import Settings
from infra.telemetry import setup_tracing


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.WARNING)


def build_settings(**overrides) -> Settings:
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


def stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


async def serve(settings: Settings, api: bool = True, processor: bool = True) -> None:
    """Run the chosen roles in this process until SIGINT/SIGTERM."""
    setup_tracing("runledger", console=settings.otel_console)
    stop = asyncio.Event()
    stop_on_signals(stop)
    tasks = []
    command_processor = CommandProcessor(settings) if processor else None
    if command_processor:
        tasks.append(asyncio.create_task(command_processor.run(stop), name="processor"))
    if api:
        health = (lambda: processor_health(command_processor)) if command_processor else None
        app = create_app(settings, health=health)
        config = uvicorn.Config(app, host=settings.api_host, port=settings.api_port,
                                log_level="warning", lifespan="on")
        server = uvicorn.Server(config)
        server.install_signal_handlers = lambda: None
        tasks.append(asyncio.create_task(server.serve(), name="api"))
        tasks.append(asyncio.create_task(stop_api_on(stop, server), name="api-stopper"))
    done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        if task.exception():
            raise task.exception()


async def stop_api_on(stop: asyncio.Event, server: uvicorn.Server) -> None:
    await stop.wait()
    server.should_exit = True


def processor_health(processor: CommandProcessor) -> dict:
    return {"processor": "ok" if processor.healthy else "failed",
            "owned_partitions": sorted(processor.owners),
            "broken_partitions": processor.broken, **processor.stats}
