"""Each task reaches exactly one queue: the one its route names."""

import pytest

from mediachat.celery import app


@pytest.mark.parametrize(
    ("task", "queue"),
    [
        ("training.tasks.training_run_execute", "training"),
        ("mediachat.tasks.conversations_close_stale", "default"),
        ("personalization.ingest.tasks.import_job_run", "default"),
        ("personalization.tasks.intent_classify", "nlu"),
    ],
)
def test_a_routed_task_lands_in_its_queue_only(task, queue):
    # kombu's in-memory transport routes a direct exchange by routing key, as Redis and AMQP do.
    with app.connection_for_write("memory://") as connection:
        channel = connection.default_channel
        for declared in app.amqp.queues.values():
            declared.bind(channel).declare()
            channel.queue_purge(declared.name)  # the in-memory broker is shared by the whole process
        app.send_task(task, args=[1], connection=connection)
        sizes = {name: channel._size(name) for name in app.amqp.queues}
    assert sizes == {name: int(name == queue) for name in ("default", "nlu", "training")}
