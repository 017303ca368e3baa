"""infra/entry/dumps.py: the tasks' dump names each task and its frames; a stop that hangs ends the process."""
import asyncio
import io
import threading

from infra.entry.dumps import EXIT_STUCK, dump_tasks, exit_if_stuck


async def parked(event: asyncio.Event) -> None:
    await event.wait()


async def test_the_tasks_dump_names_each_loops_tasks_and_where_they_wait():
    event = asyncio.Event()
    task = asyncio.create_task(parked(event), name="parked-on-purpose")
    await asyncio.sleep(0)  # let it start and park
    out = io.StringIO()
    dump_tasks({"projectors": asyncio.get_running_loop()}, out)
    event.set()
    await task
    text = out.getvalue()
    assert "--- asyncio tasks on the projectors loop:" in text
    assert "parked-on-purpose" in text and "in parked" in text and "event.wait()" in text


def test_a_process_still_running_at_the_deadline_dumps_its_threads_and_exits_stuck(capfd):
    exited: list[int] = []
    done = threading.Event()

    def exit_(status: int) -> None:
        exited.append(status)
        done.set()
    exit_if_stuck(0.05, exit_)
    assert done.wait(10)
    assert exited == [EXIT_STUCK]
    assert "most recent call first" in capfd.readouterr().err  # faulthandler's dump of every thread

