"""The chat page in a real browser: Debian's chromium, driven by Playwright, talking to a real uvicorn over loopback.

The tests use Playwright's sync API (sync tests only: pytest-asyncio's loop would clash with it in async ones).
That API keeps its own asyncio loop running in this thread, so Django's async-safety check would refuse the
ORM calls the tests make between browser steps; `allow_orm` lifts the check (DJANGO_ALLOW_ASYNC_UNSAFE) for
each test alone, through monkeypatch. Nothing runs concurrently with those calls: the loop only turns inside a
Playwright call.

Set MEDIACHAT_SCREENSHOT=1 to write docs/img/chat.png from the exchange test.
"""

import json
import os
import re
import shutil
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connections
from django.utils import timezone
from playwright.sync_api import Browser, Page, expect, sync_playwright

from mediachat.models import Conversation, Message, MessageFeedback
from personalization.models import Author, Content, Section, Tag

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
XSS = '<img src=x onerror="window.__xss=1">'
TIMEOUT_MS = 15_000


@pytest.fixture
def allow_orm(monkeypatch) -> None:
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


@pytest.fixture
def browser(allow_orm) -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
            # Django keeps connections per context, and Playwright's block runs in a context of its own: the
            # test's ORM calls opened connections there, which must be closed before the test database goes.
            connections.close_all()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 800}, color_scheme="light", locale="en-GB")
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    expect.set_options(timeout=TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    assert errors == [], f"JavaScript errors on the page: {errors}"


def frames_of(page: Page) -> list[dict]:
    """Every frame the page receives on its chat sockets, decoded, in order."""
    frames: list[dict] = []

    def on_socket(socket) -> None:
        socket.on("framereceived", lambda payload: frames.append(json.loads(payload)))

    page.on("websocket", on_socket)
    return frames


SUMMARIES = [
    "Three eruptions in three years turned a quiet peninsula into the most watched volcano on Earth.",
    "A seismologist explains how tremor, gas and a swelling ground tell that magma is on the move.",
    "Drone footage from a cave carved by flowing lava, and the volcanoes that made it.",
]


def seed_catalog(*titles: tuple[str, str, str]) -> list[Content]:
    """Published content about volcanoes, one row per (kind, title, section name)."""
    now = timezone.now()
    tag = Tag.objects.create(name="volcanoes", slug="volcanoes")
    author = Author.objects.create(name="Ana Gunnarsdóttir", slug="ana-gunnarsdottir")
    rows = []
    for i, (kind, title, section_name) in enumerate(titles):
        section, _ = Section.objects.get_or_create(name=section_name, slug=section_name.lower())
        content = Content.objects.create(
            kind=kind,
            title=title,
            slug=f"volcanoes-{i}",
            summary=SUMMARIES[i % len(SUMMARIES)],
            body="First paragraph.\n\nSecond paragraph.",
            section=section,
            status=Content.Status.PUBLISHED,
            published_at=now - timedelta(days=i + 1),
        )
        content.tags.add(tag)
        content.authors.add(author)
        rows.append(content)
    Content.objects.create(
        title="Budget talks stall in parliament",
        slug="budget-talks",
        summary="Negotiators left without a deal.",
        status=Content.Status.PUBLISHED,
        published_at=now - timedelta(hours=3),
    )
    return rows


def open_chat(page: Page, base_url: str) -> None:
    page.goto(base_url + "/")
    expect(page.locator("#connection")).to_have_attribute("data-state", "online")


def ask(page: Page, text: str) -> None:
    page.locator("#composer-input").fill(text)
    page.locator("#composer-input").press("Enter")


def settled(page: Page) -> None:
    """Wait until nothing is pending, typing or streaming on the page."""
    page.wait_for_function(
        """() => !document.querySelector(
            ".message[data-state='pending'], .message[data-state='typing'], .message[data-state='streaming']")"""
    )


def rendered_ids(page: Page) -> list[int]:
    return page.eval_on_selector_all(".message[data-message-id]", "els => els.map(e => Number(e.dataset.messageId))")


def test_exchange_streams_a_reply_shows_recommendations_and_saves_a_rating(asgi_server, page):
    catalog = seed_catalog(
        ("article", "Volcanoes of Iceland: living with Fagradalsfjall", "Science"),
        ("podcast", "The Deep Listen: how volcanoes warn us", "Science"),
        ("video", "Inside a lava tube: volcanoes from below", "Travel"),
    )
    frames = frames_of(page)
    open_chat(page, asgi_server)
    expect(page.locator("#composer-count")).to_have_text("0 / 2000")

    ask(page, "Anything new about volcanoes?")

    question = page.locator(".message-user").last
    expect(question.locator(".bubble-text")).to_have_text("Anything new about volcanoes?")
    expect(question).to_have_attribute("data-state", "sent")
    reply = page.locator(".message-assistant").last
    expect(reply).to_have_attribute("data-state", "complete")

    # The reply arrived as tokens and the bubble holds exactly what they spelled, as stored.
    kinds = [f["type"] for f in frames]
    assert kinds[0] == "welcome"
    assert kinds.index("ack") < kinds.index("token") < kinds.index("recommendations") < kinds.index("done")
    done = next(f for f in frames if f["type"] == "done")
    streamed = "".join(f["text"] for f in frames if f["type"] == "token" and f["message_id"] == done["message_id"])
    assert kinds.count("token") > 3 and streamed == done["text"]
    expect(reply.locator(".bubble-text")).to_have_text(done["text"])
    stored = Message.objects.get(pk=done["message_id"])
    assert stored.role == Message.Role.ASSISTANT and stored.text == done["text"]
    assert reply.get_attribute("data-message-id") == str(stored.pk)

    # Recommendation cards with the seeded titles, links, kinds, sections and the reason.
    cards = page.locator("#cards .rec-card")
    expect(cards).to_have_count(3)
    assert sorted(page.locator("#cards .rec-title").all_text_contents()) == sorted(c.title for c in catalog)
    first = cards.filter(has_text=catalog[0].title)
    expect(first.locator(".rec-title a")).to_have_attribute("href", f"{asgi_server}/c/{catalog[0].slug}/")
    expect(first.locator(".badge")).to_have_text("Article")
    expect(first.locator(".rec-section")).to_have_text("Science")
    expect(first.locator(".rec-summary")).to_have_text(catalog[0].summary)
    expect(first.locator(".rec-why")).not_to_be_empty()
    expect(page.locator("#cards")).not_to_contain_text("Budget talks")
    expect(reply.locator(".cited a")).to_have_count(3)

    # 👍 is saved, shown as saved, and stored.
    up = reply.get_by_role("button", name="Helpful", exact=True)
    up.click()
    expect(reply.locator(".feedback")).to_have_attribute("data-state", "saved")
    expect(reply.locator(".feedback-status")).to_have_text("Thanks, feedback saved")
    expect(up).to_have_attribute("aria-pressed", "true")
    feedback = MessageFeedback.objects.get(message_id=stored.pk)
    assert feedback.rating == 1 and feedback.reasons == []

    if os.environ.get("MEDIACHAT_SCREENSHOT") == "1":
        page.mouse.move(0, 0)
        page.wait_for_timeout(400)  # let the entrance animations end
        page.screenshot(path=str(ROOT / "docs" / "img" / "chat.png"))

    # 👎 with a reason chip and a comment replaces it.
    reply.get_by_role("button", name="Not helpful", exact=True).click()
    expect(reply.locator(".feedback")).to_have_attribute("data-state", "saved")
    reply.get_by_role("button", name="Too long", exact=True).click()
    reply.get_by_label("Comment").fill("Fewer titles, please.")
    reply.get_by_role("button", name="Send details").click()
    expect(reply.locator(".feedback-details")).to_be_hidden()
    # Each click set the box to "saving" before it returned, so "saved" here is the answer to the details.
    expect(reply.locator(".feedback")).to_have_attribute("data-state", "saved")
    feedback.refresh_from_db()
    assert (feedback.rating, feedback.reasons, feedback.comment) == (-1, ["too_long"], "Fewer titles, please.")
    assert [f["rating"] for f in frames if f["type"] == "feedback_saved"] == [1, -1, -1]


def test_server_text_is_rendered_as_text_never_as_markup(asgi_server, page):
    title = f"Volcano cam {XSS}"
    seed_catalog(("video", title, "Science"))
    open_chat(page, asgi_server)

    ask(page, f"volcanoes {XSS}")

    reply = page.locator(".message-assistant").last
    expect(reply).to_have_attribute("data-state", "complete")
    expect(page.locator(".message-user .bubble-text")).to_have_text(f"volcanoes {XSS}")
    expect(reply.locator(".bubble-text")).to_contain_text(title)  # the engine quotes the title it found
    expect(reply.locator(".cited a")).to_have_text(title)
    expect(page.locator("#cards .rec-title")).to_have_text(title)
    # The same text again, through the other path: a reload resumes the conversation from `history`.
    page.reload()
    expect(page.locator("#connection")).to_have_attribute("data-state", "online")
    expect(page.locator(".message-assistant .bubble-text")).to_contain_text(title)
    expect(page.locator(".message-assistant .cited a")).to_have_text(title)
    expect(page.locator(".message-user .bubble-text")).to_have_text(f"volcanoes {XSS}")
    assert page.locator("img").count() == 0
    assert page.evaluate("window.__xss") is None


def test_errors_are_shown_inline_with_their_detail(asgi_server, page):
    seed_catalog(("article", "Volcanoes of Iceland", "Science"))
    open_chat(page, asgi_server)

    # The composer counts against max_message_chars from `welcome` and does not send past it.
    page.locator("#composer-input").fill("x" * 2001)
    expect(page.locator("#composer-count")).to_have_text("2001 / 2000")
    expect(page.locator("#composer-count")).to_have_attribute("data-state", "over")
    expect(page.locator("#send")).to_be_disabled()
    page.locator("#composer-input").press("Enter")
    expect(page.locator(".message-user")).to_have_count(0)
    page.locator("#composer-input").fill("")

    # A frame the composer would never send: the server's refusal is shown with its code and detail.
    page.evaluate(
        """() => window.mediachat.socket.send(
            JSON.stringify({type: "message", text: "x".repeat(2001), client_id: "raw-1"}))"""
    )
    notice = page.locator(".notice-error[data-code='text_too_long']")
    expect(notice).to_contain_text("the limit is 2000")

    # Faster than the server's token bucket allows: refused messages say so, store nothing, and can be retried.
    for i in range(10):
        ask(page, f"volcanoes, take {i}")
    failed = page.locator(".message-user[data-state='failed']")
    expect(failed.first.locator(".inline-error code")).to_have_text("rate_limited")
    expect(failed.first.locator(".inline-error")).to_contain_text("slow down")
    settled(page)
    refused = failed.locator(".bubble-text").all_text_contents()
    sent = page.locator(".message-user[data-state='sent'] .bubble-text").all_text_contents()
    assert refused and sent and len(refused) + len(sent) == 10
    stored = set(Message.objects.filter(role=Message.Role.USER).values_list("text", flat=True))
    assert stored == set(sent)

    page.wait_for_timeout(1500)  # the bucket refills at 2 frames a second
    retried = failed.first
    retried_text = retried.locator(".bubble-text").text_content()
    retried.get_by_role("button", name="Retry").click()
    expect(page.locator(".message-user", has_text=retried_text)).to_have_attribute("data-state", "sent")
    expect(page.locator(".message-user", has_text=retried_text).locator(".inline-error")).to_have_count(0)
    assert Message.objects.filter(role=Message.Role.USER, text=retried_text).count() == 1

    # A rating the server refuses (the reply was deleted meanwhile) says so on the reply itself.
    settled(page)
    reply = page.locator(".message-assistant[data-state='complete']").last
    Message.objects.filter(pk=int(reply.get_attribute("data-message-id"))).delete()
    reply.get_by_role("button", name="Helpful", exact=True).click()
    expect(reply.locator(".feedback")).to_have_attribute("data-state", "error")
    expect(reply.locator(".feedback-status")).to_contain_text("Not saved: No assistant message")


def test_reconnect_resyncs_missing_messages_and_resends_unacknowledged_ones(asgi_server, page):
    seed_catalog(("article", "Volcanoes of Iceland", "Science"), ("podcast", "How volcanoes warn us", "Science"))
    frames = frames_of(page)
    open_chat(page, asgi_server)
    ask(page, "Tell me about volcanoes")
    expect(page.locator(".message-assistant").last).to_have_attribute("data-state", "complete")
    conversation_id = page.evaluate("window.mediachat.conversationId")
    conversation = Conversation.objects.get(pk=conversation_id)
    assert page.evaluate("sessionStorage.getItem('mediachat.conversation')") == str(conversation_id)

    # Stored while the page was not looking: the resync after reconnecting must bring it, once.
    missed = Message.objects.create(
        conversation=conversation, role=Message.Role.ASSISTANT, text="Written while you were away."
    )
    page.evaluate("window.mediachat.socket.close()")
    expect(page.locator("#connection")).not_to_have_attribute("data-state", "online")
    page.wait_for_function("window.mediachat.welcomes === 2")
    expect(page.locator(f".message[data-message-id='{missed.pk}']")).to_have_text(re.compile("Written while"))
    expect(page.locator("#connection")).to_have_attribute("data-state", "online")

    # A message whose ack never came (the socket closes right behind it) is resent with its client_id.
    page.evaluate(
        """() => {
            const input = document.getElementById("composer-input");
            input.value = "And more on volcanoes";
            input.dispatchEvent(new Event("input"));
            document.getElementById("composer").requestSubmit();
            window.mediachat.socket.close();
        }"""
    )
    resent = page.locator(".message-user", has_text="And more on volcanoes")
    expect(resent).to_have_attribute("data-state", "sent")
    settled(page)
    expect(resent).to_have_count(1)
    assert conversation.messages.filter(role=Message.Role.USER, text="And more on volcanoes").count() == 1
    # The server read the message before the close, so it was stored once and the resend was acknowledged
    # as a duplicate; the resync had already brought it and its interrupted reply.
    acks = [f for f in frames if f["type"] == "ack"]
    assert len(acks) == 2 and acks[-1]["duplicate"] is True
    assert rendered_ids(page).count(acks[-1]["message_id"]) == 1

    # What the page shows is what the database holds: every message once, in order.
    stored_ids = list(conversation.messages.order_by("id").values_list("id", flat=True))
    assert rendered_ids(page) == stored_ids

    # A reload resumes the conversation from sessionStorage through `history` after 0.
    page.reload()
    expect(page.locator("#connection")).to_have_attribute("data-state", "online")
    expect(page.locator(".message[data-message-id]")).to_have_count(len(stored_ids))
    assert rendered_ids(page) == stored_ids
    expect(page.locator("#empty-state")).to_be_hidden()

    # "New conversation" starts afresh: the next message opens a second conversation.
    page.get_by_role("button", name="New conversation").click()
    expect(page.locator(".message")).to_have_count(0)
    expect(page.locator("#empty-state")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('mediachat.conversation')") is None
    ask(page, "Volcanoes, from the start")
    expect(page.locator(".message-assistant")).to_have_attribute("data-state", "complete")
    assert page.evaluate("window.mediachat.conversationId") not in (None, conversation_id)
    assert Conversation.objects.count() == 2


@pytest.fixture
def slow_stream(monkeypatch) -> None:
    """Replies stream a word every 300 ms on servers started after this (the window in which to press Stop)."""
    monkeypatch.setenv("MEDIACHAT_STREAM_DELAY_MS", "300")


def test_stop_ends_a_streaming_reply_and_shift_enter_writes_a_new_line(slow_stream, asgi_server, page):
    seed_catalog(("article", "Volcanoes of Iceland", "Science"), ("podcast", "How volcanoes warn us", "Science"))
    open_chat(page, asgi_server)
    composer = page.locator("#composer-input")

    composer.fill("Volcanoes")
    composer.press("Shift+Enter")
    composer.press_sequentially("in Iceland")
    expect(composer).to_have_value("Volcanoes\nin Iceland")
    expect(page.locator(".message-user")).to_have_count(0)
    composer.press("Enter")

    expect(composer).to_have_value("")
    question = page.locator(".message-user .bubble-text")
    expect(question).to_have_text("Volcanoes\nin Iceland")
    reply = page.locator(".message-assistant").last
    expect(reply).to_have_attribute("data-state", "streaming")
    stop = page.get_by_role("button", name="Stop")
    expect(stop).to_be_visible()
    stop.click()

    expect(reply).to_have_attribute("data-state", "interrupted")
    expect(reply.locator(".status-note")).to_have_text("Stopped before the end.")
    expect(stop).to_be_hidden()
    stored = Message.objects.get(pk=int(reply.get_attribute("data-message-id")))
    assert stored.status == Message.Status.INTERRUPTED
    assert stored.text and reply.locator(".bubble-text").text_content() == stored.text
    assert Message.objects.get(role=Message.Role.USER).text == "Volcanoes\nin Iceland"


@pytest.fixture
def long_burst(monkeypatch) -> None:
    """Messages under 4 s apart are a burst on servers started after this (time to send three)."""
    monkeypatch.setenv("MEDIACHAT_REPLY_BURST_MS", "4000")


def test_a_burst_gets_one_reply_and_the_superseded_message_no_waiting_placeholder(
    slow_stream, long_burst, asgi_server, page
):
    seed_catalog(("article", "Volcanoes of Iceland", "Science"), ("podcast", "How volcanoes warn us", "Science"))
    open_chat(page, asgi_server)
    ask(page, "Volcanoes")  # the first message: answered at once
    expect(page.locator(".message-assistant").last).to_have_attribute("data-state", "streaming")
    ask(page, "Iceland")  # while that reply streams: a burst, its reply waits
    expect(page.locator(".message[data-state='typing']")).to_have_count(1)
    ask(page, "podcasts")  # supersedes it
    page.wait_for_function("() => document.querySelectorAll('.message-user[data-message-id]').length === 3")
    expect(page.locator(".message[data-state='typing']")).to_have_count(1)
    settled(page)

    expect(page.locator(".message-assistant")).to_have_count(2)
    expect(page.get_by_role("button", name="Stop")).to_be_hidden()
    replies = Message.objects.filter(role=Message.Role.ASSISTANT).select_related("reply_to").order_by("id")
    assert [(r.reply_to.text, r.status) for r in replies] == [("Volcanoes", "interrupted"), ("podcasts", "complete")]
    assert page.locator(".message-assistant").last.get_attribute("data-message-id") == str(replies[1].pk)
