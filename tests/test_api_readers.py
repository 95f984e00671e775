"""The REST API's reader data: conversations, messages, feedback and the interactions beacon.

Two signed-in readers and two anonymous ones must never see or touch each other's data: another
reader's conversation or message answers 404, exactly like one that does not exist.
"""

import json
from datetime import timedelta

import httpx
import pytest
from django.utils import timezone

from mediachat.models import Message, MessageFeedback
from personalization.identity import ReaderRef
from personalization.models import Content, Interaction

from .test_api import (
    anonymous_reader,
    api_client,
    make_content,
    make_conversation,
    make_message,
    make_user,
)

pytestmark = pytest.mark.django_db


@pytest.fixture(params=["signed-in", "anonymous"])
def two_readers(request):
    """Two readers with a client each: a signed-in pair, then an anonymous pair."""
    if request.param == "signed-in":
        a, b = make_user(), make_user()
        return (api_client(user=a), ReaderRef(user_id=a.pk)), (api_client(user=b), ReaderRef(user_id=b.pk))
    ca, cb = api_client(), api_client()
    return (ca, anonymous_reader(ca)), (cb, anonymous_reader(cb))


def chat(reader: ReaderRef, *, cited: tuple[Content, ...] = ()) -> tuple:
    conversation = make_conversation(reader, title="About space")
    question = make_message(conversation, "What about the moon?")
    answer = make_message(conversation, "Read this.", role=Message.Role.ASSISTANT, cited=cited)
    return conversation, question, answer


# --- isolation -------------------------------------------------------------------------------------


def test_readers_never_see_each_others_conversations_messages_feedback_or_signals(two_readers):
    (client_a, reader_a), (client_b, reader_b) = two_readers
    item = make_content("Moon")
    conv_a, _, answer_a = chat(reader_a, cited=(item,))
    conv_b, _, answer_b = chat(reader_b)
    assert client_a.post(f"/api/messages/{answer_a.id}/feedback/", {"rating": 1}, format="json").status_code == 200
    events = {"events": [{"content": item.slug, "kind": "click", "idempotency_key": "k1"}]}
    assert client_a.post("/api/interactions/", events, format="json").json() == {"recorded": 1, "duplicates": 0}

    assert [c["id"] for c in client_a.get("/api/conversations/").json()["results"]] == [conv_a.id]
    assert [c["id"] for c in client_b.get("/api/conversations/").json()["results"]] == [conv_b.id]
    for url in (f"/api/conversations/{conv_a.id}/", f"/api/conversations/{conv_a.id}/messages/"):
        response = client_b.get(url)
        assert response.status_code == 404 and response.json()["code"] == "not_found"
    missing = client_b.get(f"/api/conversations/{conv_a.id + conv_b.id + 1000}/")
    assert missing.status_code == 404 and missing.json()["detail"].startswith("No conversation")

    # B can neither rate A's answer nor overwrite A's rating; the refusal looks like a missing message.
    response = client_b.post(f"/api/messages/{answer_a.id}/feedback/", {"rating": -1}, format="json")
    assert response.status_code == 404 and response.json()["code"] == "not_found"
    assert MessageFeedback.objects.get(message=answer_a).rating == 1
    assert client_a.post(f"/api/messages/{answer_b.id}/feedback/", {"rating": 1}, format="json").status_code == 404
    assert not MessageFeedback.objects.filter(message=answer_b).exists()

    # Signals: each reader lists only their own; B's identical idempotency key is B's own, not a duplicate.
    assert client_b.get("/api/interactions/").json()["count"] == 0
    assert client_b.post("/api/interactions/", events, format="json").json() == {"recorded": 1, "duplicates": 0}
    assert client_a.get("/api/interactions/").json()["count"] == 1
    assert Interaction.objects.filter(reader_b.owner_q()).count() == 1
    assert Interaction.objects.filter(reader_a.owner_q()).count() == 1

    messages_b = client_b.get(f"/api/conversations/{conv_b.id}/messages/").json()["results"]
    assert all(m["feedback"] is None for m in messages_b)


def test_signed_in_and_anonymous_readers_are_apart_and_no_session_sees_nothing():
    user = make_user()
    signed_in = api_client(user=user)
    anonymous = api_client()
    anon_reader = anonymous_reader(anonymous)
    conv_user, _, _ = chat(ReaderRef(user_id=user.pk))
    conv_anon, _, _ = chat(anon_reader)

    assert signed_in.get(f"/api/conversations/{conv_anon.id}/").status_code == 404
    assert anonymous.get(f"/api/conversations/{conv_user.id}/").status_code == 404
    stranger = api_client()  # no session at all
    assert stranger.get("/api/conversations/").json()["count"] == 0
    assert stranger.get(f"/api/conversations/{conv_anon.id}/messages/").status_code == 404
    assert stranger.get("/api/interactions/").json()["count"] == 0
    assert "sessionid" not in stranger.cookies  # reading does not start sessions


def test_reader_endpoint_starts_an_anonymous_session_and_reports_the_signed_in_user():
    client = api_client()
    first = client.get("/api/reader/").json()
    assert first["authenticated"] is False and first["username"] is None and first["csrf_token"]
    key = client.session["mediachat_reader"]
    client.get("/api/reader/")
    assert client.session["mediachat_reader"] == key  # stable across calls
    user = make_user("ada")
    assert api_client(user=user).get("/api/reader/").json()["username"] == "ada"


# --- conversations and messages --------------------------------------------------------------------


def test_conversation_list_and_detail():
    user = make_user()
    reader = ReaderRef(user_id=user.pk)
    older = make_conversation(reader, title="Older")
    make_message(older)
    newer, _, _ = chat(reader)
    client = api_client(user=user)

    listed = client.get("/api/conversations/").json()["results"]
    assert [c["id"] for c in listed] == [newer.id, older.id]
    assert listed[0] == {
        "id": newer.id,
        "title": "About space",
        "started_at": listed[0]["started_at"],
        "updated_at": listed[0]["updated_at"],
        "message_count": 2,
    }
    assert client.get(f"/api/conversations/{older.id}/").json()["message_count"] == 1


def test_messages_carry_citations_and_feedback_and_page_by_after_id():
    user = make_user()
    reader = ReaderRef(user_id=user.pk)
    live = make_content("Live item")
    retracted = make_content("Retracted item")
    conversation, question, answer = chat(reader, cited=(live, retracted))
    Content.objects.filter(pk=retracted.pk).update(status=Content.Status.DRAFT)
    MessageFeedback.objects.create(message=answer, rating=1, reasons=["helpful"], comment="Nice")
    later = make_message(conversation, "And Mars?")
    client = api_client(user=user)

    body = client.get(f"/api/conversations/{conversation.id}/messages/").json()
    assert [m["id"] for m in body["results"]] == [question.id, answer.id, later.id]
    assert body["has_more"] is False and body["next_after_id"] == later.id and body["conversation"] == conversation.id
    reply = body["results"][1]
    assert reply["role"] == "assistant" and reply["reply_to"] is None and reply["status"] == "complete"
    assert [c["slug"] for c in reply["cited"]] == [live.slug]  # a retracted item is no longer shown
    assert reply["cited"][0]["url"] == f"http://testserver/c/{live.slug}/"
    assert reply["feedback"]["rating"] == 1 and reply["feedback"]["reasons"] == ["helpful"]
    assert body["results"][0]["feedback"] is None

    first = client.get(f"/api/conversations/{conversation.id}/messages/", {"limit": 2}).json()
    assert [m["id"] for m in first["results"]] == [question.id, answer.id] and first["has_more"] is True
    rest = client.get(f"/api/conversations/{conversation.id}/messages/", {"after_id": first["next_after_id"]}).json()
    assert [m["id"] for m in rest["results"]] == [later.id] and rest["has_more"] is False
    empty = client.get(f"/api/conversations/{conversation.id}/messages/", {"after_id": later.id}).json()
    assert empty["results"] == [] and empty["next_after_id"] is None


@pytest.mark.parametrize(
    "params", [{"after_id": "x"}, {"after_id": -1}, {"after_id": 2**70}, {"limit": 0}, {"limit": 201}]
)
def test_bad_message_parameters_get_a_400(params):
    user = make_user()
    conversation, _, _ = chat(ReaderRef(user_id=user.pk))
    response = api_client(user=user).get(f"/api/conversations/{conversation.id}/messages/", params)
    assert response.status_code == 400 and response.json()["code"] == "invalid_field"


def test_huge_ids_in_paths_are_404_not_500():
    client = api_client(user=make_user())
    huge = 10**30
    assert client.get(f"/api/conversations/{huge}/").status_code == 404
    assert client.get(f"/api/conversations/{huge}/messages/").status_code == 404
    assert client.post(f"/api/messages/{huge}/feedback/", {"rating": 1}, format="json").status_code == 404


def test_reader_query_counts_do_not_grow_with_rows(django_assert_max_num_queries):
    user = make_user()
    reader = ReaderRef(user_id=user.pk)
    items = [make_content() for _ in range(3)]
    conversation = make_conversation(reader)
    for n in range(12):
        make_message(conversation, f"q{n}")
        answer = make_message(conversation, f"a{n}", role=Message.Role.ASSISTANT, cited=tuple(items))
        MessageFeedback.objects.create(message=answer, rating=-1)
        make_conversation(reader)
    for item in items * 5:
        Interaction.objects.create(user=user, content=item, kind="view")
    client = api_client(user=user)

    # session, user, then: conversation check, messages with feedback, citations
    with django_assert_max_num_queries(5):
        assert len(client.get(f"/api/conversations/{conversation.id}/messages/").json()["results"]) == 24
    with django_assert_max_num_queries(4):  # session, user, count, page
        assert client.get("/api/conversations/").json()["count"] == 13
    with django_assert_max_num_queries(4):
        assert client.get("/api/interactions/").json()["count"] == 15


# --- feedback --------------------------------------------------------------------------------------


def test_feedback_is_saved_replaced_and_shown():
    user = make_user()
    conversation, _, answer = chat(ReaderRef(user_id=user.pk))
    client = api_client(user=user)
    url = f"/api/messages/{answer.id}/feedback/"

    response = client.post(url, {"rating": 1, "reasons": ["helpful", "accurate"]}, format="json")
    assert response.status_code == 200
    assert response.json()["rating"] == 1 and response.json()["reasons"] == ["accurate", "helpful"]
    response = client.post(url, {"rating": -1, "reasons": ["too_long"], "comment": "  Shorter please "}, format="json")
    assert response.json()["message"] == answer.id and response.json()["comment"] == "Shorter please"
    feedback = MessageFeedback.objects.get(message=answer)
    assert (feedback.rating, feedback.reasons) == (-1, ["too_long"])
    shown = client.get(f"/api/conversations/{conversation.id}/messages/").json()["results"][1]["feedback"]
    assert shown["rating"] == -1 and shown["comment"] == "Shorter please"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"rating": "1"}, 400, "invalid_field"),
        ({"rating": True}, 400, "invalid_field"),
        ({"rating": 5}, 400, "invalid_field"),
        ({"rating": 1, "reasons": ["boring"]}, 400, "invalid_field"),
        ({"rating": 1, "reasons": "helpful"}, 400, "invalid_field"),
        ({"rating": 1, "comment": "x" * 2001}, 400, "text_too_long"),
        ({"rating": 1, "comment": "nul\x00"}, 400, "invalid_text"),
        ({"rating": 1, "comment": 42}, 400, "invalid_field"),
        ({"reasons": []}, 400, "missing_field"),
        ([1, 2], 400, "invalid_json"),
    ],
)
def test_bad_feedback_is_refused_with_a_code_and_stores_nothing(body, status, code):
    user = make_user()
    _, _, answer = chat(ReaderRef(user_id=user.pk))
    response = api_client(user=user).post(f"/api/messages/{answer.id}/feedback/", body, format="json")
    assert response.status_code == status
    assert response.json()["code"] == code and response.json()["detail"]
    assert not MessageFeedback.objects.exists()


def test_feedback_on_a_readers_own_question_or_unknown_message_is_404_and_bad_bodies_are_4xx():
    user = make_user()
    _, question, answer = chat(ReaderRef(user_id=user.pk))
    client = api_client(user=user)
    for message_id in (question.id, answer.id + 1000):
        response = client.post(f"/api/messages/{message_id}/feedback/", {"rating": 1}, format="json")
        assert response.status_code == 404 and response.json()["code"] == "not_found"
    url = f"/api/messages/{answer.id}/feedback/"
    response = client.post(url, "{not json", content_type="application/json")
    assert response.status_code == 400 and response.json()["code"] == "invalid_json"
    response = client.post(url, {"rating": 1})  # multipart form: JSON only
    assert response.status_code == 415 and response.json()["code"] == "unsupported_media_type"
    response = client.get(url)
    assert response.status_code == 405 and response.json()["code"] == "method_not_allowed"
    response = client.post(url, "[" * 50_000 + "]" * 50_000, content_type="application/json")
    assert response.status_code == 400 and response.json()["code"] == "invalid_json"
    response = client.post(url, {"rating": 1, "comment": "x" * 300_000}, format="json")
    assert response.status_code == 413 and response.json()["code"] == "too_large"
    assert not MessageFeedback.objects.exists()


def test_anonymous_feedback_needs_the_csrf_token_from_the_reader_endpoint():
    client = api_client(enforce_csrf_checks=True)
    reader = anonymous_reader(client)
    _, _, answer = chat(reader)
    url = f"/api/messages/{answer.id}/feedback/"
    response = client.post(url, {"rating": 1}, format="json")
    assert response.status_code == 403 and response.json()["code"] == "permission_denied"
    assert "CSRF" in response.json()["detail"]
    token = client.get("/api/reader/").json()["csrf_token"]
    assert client.post(url, {"rating": 1}, format="json", HTTP_X_CSRFTOKEN=token).status_code == 200


# --- interactions beacon ---------------------------------------------------------------------------


def beacon(client, events, **kwargs):
    return client.post("/api/interactions/", {"events": events}, format="json", **kwargs)


def test_beacon_records_a_batch_by_id_or_slug_for_the_caller():
    user = make_user()
    client = api_client(user=user)
    a, b = make_content("A"), make_content("B")
    when = (timezone.now() - timedelta(hours=2)).isoformat()
    response = beacon(
        client,
        [
            {"content": a.id, "kind": "impression"},
            {"content": b.slug, "kind": "dwell", "value": 42.5, "source": "app", "occurred_at": when},
            {"content": a.slug, "kind": "rate", "value": 4},
        ],
    )
    assert response.status_code == 200 and response.json() == {"recorded": 3, "duplicates": 0}
    rows = list(Interaction.objects.order_by("id"))
    assert [(r.user_id, r.session_key, r.content_id, r.kind) for r in rows] == [
        (user.pk, "", a.id, "impression"),
        (user.pk, "", b.id, "dwell"),
        (user.pk, "", a.id, "rate"),
    ]
    assert rows[1].value == 42.5 and rows[1].source == "app" and rows[1].occurred_at.isoformat() == when
    listed = client.get("/api/interactions/").json()["results"]
    assert {i["content"]["slug"] for i in listed} == {a.slug, b.slug}


def test_beacon_accepts_text_plain_like_send_beacon_and_skips_csrf():
    item = make_content()
    client = api_client(user=make_user(), enforce_csrf_checks=True)
    body = json.dumps({"events": [{"content": item.id, "kind": "view"}]})
    response = client.post("/api/interactions/", body, content_type="text/plain;charset=UTF-8")
    assert response.status_code == 200 and response.json()["recorded"] == 1
    anonymous = api_client(enforce_csrf_checks=True)
    anonymous_reader(anonymous)
    response = anonymous.post("/api/interactions/", body, content_type="text/plain")
    assert response.status_code == 200 and Interaction.objects.filter(user__isnull=True).count() == 1


def test_beacon_idempotency_keys_are_stored_once_and_counted_as_duplicates():
    item = make_content()
    client = api_client(user=make_user())
    events = [
        {"content": item.id, "kind": "click", "idempotency_key": "c-1"},
        {"content": item.id, "kind": "click", "idempotency_key": "c-1"},
        {"content": item.id, "kind": "view", "idempotency_key": "v-1"},
        {"content": item.id, "kind": "view"},
    ]
    assert beacon(client, events).json() == {"recorded": 3, "duplicates": 1}
    assert beacon(client, events).json() == {"recorded": 1, "duplicates": 3}  # the keyless one again
    assert Interaction.objects.count() == 4


def test_a_bad_event_rejects_the_whole_batch_with_errors_per_index():
    item = make_content()
    draft = make_content("Draft", status=Content.Status.DRAFT)
    client = api_client(user=make_user())
    response = beacon(
        client,
        [
            {"content": item.id, "kind": "view", "idempotency_key": "ok-1"},
            {"content": item.id, "kind": "teleport"},
            {"content": draft.slug, "kind": "view"},
            {"content": 10**30, "kind": "view"},
            {"content": True, "kind": "view", "value": "lots", "extra": 1},
            {"content": item.slug, "kind": "dwell"},
            {"content": item.slug, "kind": "dwell", "value": -3},
            {"content": item.slug, "kind": "rate", "value": 9},
            {"content": item.slug, "kind": "view", "occurred_at": "yesterday"},
            {"content": item.slug, "kind": "view", "occurred_at": (timezone.now() + timedelta(hours=1)).isoformat()},
            {"content": item.slug, "kind": "view", "occurred_at": "2000-01-01T00:00:00Z"},
            {"content": item.slug, "kind": "view", "source": "Bad Source"},
            {"content": item.slug, "kind": "view", "idempotency_key": "k" * 65},
            {"content": item.slug, "kind": "view", "value": [1]},
            "not an object",
            {"content": "no-such-item", "kind": "view"},
        ],
    )
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid_events" and "nothing was recorded" in body["detail"]
    errors = {e["index"]: e["fields"] for e in body["errors"]}
    assert sorted(errors) == list(range(1, 16))
    assert set(errors[1]) == {"kind"}
    assert "No published content" in errors[2]["content"] and "No published content" in errors[15]["content"]
    assert set(errors[3]) == {"content"}
    assert set(errors[4]) == {"event", "content", "value"}
    assert set(errors[5]) == set(errors[6]) == set(errors[7]) == {"value"}
    assert set(errors[8]) == set(errors[9]) == set(errors[10]) == {"occurred_at"}
    assert set(errors[11]) == {"source"} and set(errors[12]) == {"idempotency_key"}
    assert set(errors[13]) == {"value"} and set(errors[14]) == {"event"}
    assert not Interaction.objects.exists()


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ('{"events": [', 400, "invalid_json"),
        ('{"events": [NaN]}', 400, "invalid_json"),
        ("[]", 400, "invalid_field"),
        ('{"nothing": 1}', 400, "invalid_field"),
        ('{"events": {"content": 1}}', 400, "invalid_field"),
        ('{"events": []}', 400, "invalid_field"),
        (json.dumps({"events": [{"content": 1, "kind": "view"}] * 101}), 400, "too_many_events"),
        (json.dumps({"events": [{"content": 1, "kind": "view", "source": "x" * 3000}] * 99}), 413, "too_large"),
        ('{"events": ' + "[" * 100_000 + "]" * 100_000 + "}", 400, "invalid_json"),
        (b'{"events": [{"content": "\xff", "kind": "view"}]}', 400, "invalid_json"),
    ],
)
def test_malformed_or_oversized_beacons_are_4xx(body, status, code):
    make_content()
    response = api_client(user=make_user()).post("/api/interactions/", body, content_type="application/json")
    assert response.status_code == status, response.content
    assert response.json()["code"] == code
    assert not Interaction.objects.exists()


def test_beacon_without_a_reader_session_is_refused():
    item = make_content()
    response = beacon(api_client(), [{"content": item.id, "kind": "view"}])
    assert response.status_code == 403 and response.json()["code"] == "no_reader"
    response = api_client().post("/api/interactions/", "x=1", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 415 and response.json()["code"] == "unsupported_media_type"
    assert not Interaction.objects.exists()


def test_beacon_over_a_real_server(asgi_server):
    """The whole path over loopback: uvicorn, session cookie, text/plain beacon, then the reader's list."""
    item = make_content("Live")
    with httpx.Client(base_url=asgi_server, timeout=10) as http:
        assert http.get("/api/reader/").json()["authenticated"] is False
        body = json.dumps({"events": [{"content": item.slug, "kind": "view", "idempotency_key": "v"}] * 2})
        response = http.post("/api/interactions/", content=body, headers={"Content-Type": "text/plain;charset=UTF-8"})
        assert response.status_code == 200 and response.json() == {"recorded": 1, "duplicates": 1}
        assert http.get("/api/interactions/").json()["count"] == 1
        with httpx.Client(base_url=asgi_server, timeout=10) as stranger:
            assert stranger.get("/api/interactions/").json()["count"] == 0
            response = stranger.post("/api/interactions/", content=body, headers={"Content-Type": "text/plain"})
            assert response.status_code == 403 and response.json()["code"] == "no_reader"
