"""Customer messages feed training only with consent: as LM text and as labelled intent examples."""

from datetime import UTC, datetime

import pytest

from personalization.models import CustomerMessage
from personalization.selectors import customer_intent_examples, customer_training_texts

pytestmark = pytest.mark.django_db


def message(external_id: str, text: str, *, consent: bool, labels: list[str], day: int) -> CustomerMessage:
    return CustomerMessage.objects.create(
        channel=CustomerMessage.Channel.TICKET,
        source="helpdesk",
        external_id=external_id,
        text=text,
        received_at=datetime(2026, 3, day, tzinfo=UTC),
        labels=labels,
        training_consent=consent,
        content_hash=external_id,
    )


def test_only_consented_messages_become_training_text_and_intent_examples():
    message("t1", "Please cancel my subscription", consent=True, labels=["cancel_subscription"], day=3)
    message("t2", "My invoice is wrong", consent=False, labels=["billing"], day=1)
    message("t3", "The app crashes on launch and I was charged twice", consent=True, labels=["bug", "billing"], day=2)
    message("t4", "Thanks for the great coverage", consent=True, labels=[], day=4)

    assert [m.external_id for m in customer_training_texts()] == ["t3", "t1", "t4"]
    assert sorted(customer_intent_examples()) == [
        ("Please cancel my subscription", "cancel_subscription"),
        ("The app crashes on launch and I was charged twice", "billing"),
        ("The app crashes on launch and I was charged twice", "bug"),
    ]
    assert list(customer_intent_examples(labels=["billing"])) == [
        ("The app crashes on launch and I was charged twice", "billing")
    ]
