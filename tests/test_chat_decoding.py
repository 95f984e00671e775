"""Decoding parameters: bounds, profiles editors keep in the admin, per-request overrides, and the socket's errors.

Also the conversation state a reply's engine gets (earlier turns with the items replies cited) and the
dashboard's account of whether the assistant can answer.
"""

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth.models import Group, User
from django.urls import reverse

from mediachat.consumers import recent_turns
from mediachat.dashboard import assistant_status
from mediachat.engine.decoding import (
    DecodingError,
    DecodingParams,
    Strategy,
    decoding_resolve,
    generate_kwargs,
)
from mediachat.models import DecodingProfile, Message
from mediachat.selectors import _decoding_cache, decoding_defaults, decoding_for_request
from personalization.roles import STAFF, roles_sync
from tests.test_ws_protocol import ask, catalog, chat_settings, next_event, open_socket, session_key  # noqa: F401
from tests.ws_support import worker_connections_closed  # noqa: F401 (autouse)
from training.models import ModelKind, ModelVersion, TrainingRun


@pytest.fixture(autouse=True)
def fresh_decoding_cache():
    _decoding_cache.clear()
    yield
    _decoding_cache.clear()


def test_resolve_replaces_checked_fields():
    params = decoding_resolve(DecodingParams(), {"strategy": "sample", "temperature": 1, "top_k": 10.0, "seed": 7})
    assert (params.strategy, params.temperature, params.top_k, params.seed) == ("sample", 1.0, 10, 7)
    assert isinstance(params.temperature, float) and isinstance(params.top_k, int)
    assert params.max_new_tokens == DecodingParams().max_new_tokens


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"temperature": 0}, "temperature"),
        ({"temperature": 9.5}, "temperature"),
        ({"top_p": 1.5}, "top_p"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"max_new_tokens": 100000}, "max_new_tokens"),
        ({"max_new_tokens": 12.5}, "max_new_tokens"),
        ({"num_beams": 1}, "num_beams"),
        ({"repetition_penalty": "high"}, "repetition_penalty"),
        ({"top_k": True}, "top_k"),
        ({"strategy": "creative"}, "strategy"),
        ({"temprature": 0.5}, "temprature"),
    ],
)
def test_resolve_refuses_values_out_of_bounds_with_the_field(override, field):
    with pytest.raises(DecodingError) as caught:
        decoding_resolve(DecodingParams(), override)
    assert caught.value.field == field and field in caught.value.detail


def test_generate_kwargs_follow_the_strategy():
    greedy = generate_kwargs(DecodingParams(), eos_token_id=1, pad_token_id=0)
    assert greedy["do_sample"] is False and greedy["num_beams"] == 1 and greedy["top_k"] is None
    sample = generate_kwargs(DecodingParams(strategy=Strategy.SAMPLE, top_k=5), eos_token_id=1, pad_token_id=0)
    assert sample["do_sample"] is True and sample["top_k"] == 5 and sample["temperature"] == 0.8
    beam = generate_kwargs(DecodingParams(strategy=Strategy.BEAM, num_beams=3), eos_token_id=1, pad_token_id=0)
    assert beam["num_beams"] == 3 and beam["do_sample"] is False


@pytest.mark.django_db
def test_defaults_come_from_settings_then_the_default_profile(settings):
    settings.MEDIACHAT = {**settings.MEDIACHAT, "DECODING": {"max_new_tokens": 40}}
    assert decoding_defaults().max_new_tokens == 40
    _decoding_cache.clear()
    DecodingProfile.objects.create(name="lively", is_default=True, strategy="sample", temperature=1.2, top_k=20)
    defaults = decoding_defaults()
    assert (defaults.strategy, defaults.temperature, defaults.top_k) == ("sample", 1.2, 20)


@pytest.mark.django_db
def test_a_request_names_a_profile_and_overrides_fields():
    DecodingProfile.objects.create(name="precise", strategy="beam", num_beams=3, max_new_tokens=50)
    assert decoding_for_request(None) is None
    params = decoding_for_request({"profile": "precise", "max_new_tokens": 20})
    assert (params.strategy, params.num_beams, params.max_new_tokens) == ("beam", 3, 20)
    with pytest.raises(DecodingError, match="No decoding profile named 'nope'"):
        decoding_for_request({"profile": "nope"})


@pytest.fixture
def staff_client(client, db):
    roles_sync()
    user = User.objects.create_user("stella", is_staff=True)
    user.groups.add(Group.objects.get(name=STAFF))
    client.force_login(user)
    return client


def profile_form(**fields) -> dict:
    form = {
        "name": "calm",
        "description": "",
        "strategy": "sample",
        "max_new_tokens": 64,
        "temperature": 0.7,
        "top_k": 40,
        "top_p": 0.9,
        "repetition_penalty": 1.1,
        "num_beams": 4,
    }
    return {**form, **fields}


def test_admin_refuses_a_profile_out_of_bounds_with_a_form_error(staff_client):
    url = reverse("admin:mediachat_decodingprofile_add")
    response = staff_client.post(url, profile_form(temperature=5))
    assert response.status_code == 200
    assert "temperature" in response.context["adminform"].form.errors
    assert "between 0.05 and 2" in response.content.decode()
    assert not DecodingProfile.objects.exists()

    response = staff_client.post(url, profile_form(is_default="on"))
    assert response.status_code == 302
    assert DecodingProfile.objects.get(name="calm").is_default


def test_admin_keeps_one_default_profile(staff_client):
    DecodingProfile.objects.create(name="old", is_default=True)
    response = staff_client.post(reverse("admin:mediachat_decodingprofile_add"), profile_form(is_default="on"))
    assert response.status_code == 302
    assert list(DecodingProfile.objects.filter(is_default=True).values_list("name", flat=True)) == ["calm"]
    assert staff_client.get(reverse("admin:mediachat_decodingprofile_changelist")).status_code == 200


@pytest.mark.django_db(transaction=True)
async def test_socket_refuses_bad_decoding_and_stores_nothing(catalog, session_key):  # noqa: F811
    socket = await open_socket(session_key)
    for decoding, needle in [
        ({"temperature": 7}, "temperature"),
        ({"profile": "missing"}, "missing"),
        ("hot", "object"),
        ({"warmth": 1}, "warmth"),
    ]:
        await socket.send_json_to({"type": "message", "text": "climate", "client_id": "d", "decoding": decoding})
        error, _ = await next_event(socket, "error")
        assert error["code"] == "invalid_decoding" and needle in error["detail"] and error["client_id"] == "d"
    assert await database_sync_to_async(Message.objects.count)() == 0

    ack, _, done = await ask(socket, "climate", decoding={"max_new_tokens": 30})  # in bounds: answered
    assert done["status"] == "complete" and done["reply_to"] == ack["message_id"]
    await socket.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_follow_up_sees_the_earlier_turns_with_their_citations(catalog, session_key):  # noqa: F811
    socket = await open_socket(session_key)
    first, _, first_done = await ask(socket, "climate")
    _, _, done = await ask(socket, "more like that", conversation_id=first["conversation_id"])
    assert done["text"].startswith("More on climate")

    turns = await database_sync_to_async(recent_turns)(
        conversation_id=first["conversation_id"], before_id=done["message_id"], limit=10
    )
    assert [t.role for t in turns] == ["user", "assistant", "user"]
    assert turns[1].cited == tuple(c["id"] for c in first_done["cited"]) and turns[1].cited
    await socket.disconnect()


@pytest.mark.django_db
def test_assistant_status_says_why_it_is_unavailable(tmp_path, settings):
    status = assistant_status()
    assert not status.available and "No chat model is active" in status.detail

    TrainingRun.objects.create(kind=ModelKind.CHAT_LM, status=TrainingRun.Status.FAILED, log="start\nout of memory")
    assert "failed: out of memory" in assistant_status().detail

    version = ModelVersion.objects.create(
        kind=ModelKind.CHAT_LM, name="lm-1", artifact_path=str(tmp_path), status=ModelVersion.Status.ACTIVE
    )
    assert not assistant_status().available and "has no files" in assistant_status().detail
    (tmp_path / "config.json").write_text("{}")
    status = assistant_status()
    assert status.available and f"version {version.pk}" in status.detail

    from django.core.cache import cache

    from mediachat.engine.lm import STATUS_KEY

    cache.set(STATUS_KEY, {"state": "error", "model_version_id": version.pk, "last_error": "bad weights"})
    try:
        status = assistant_status()
        assert not status.available and "failed to load: bad weights" in status.detail
    finally:
        cache.delete(STATUS_KEY)

    settings.MEDIACHAT = {**settings.MEDIACHAT, "CHAT_MODEL": str(tmp_path / "absent")}
    assert "holds no model" in assistant_status().detail


def test_dashboard_shows_the_assistant_status(staff_client):
    page = staff_client.get(reverse("admin-dashboard")).content.decode()
    assert 'id="assistant-status"' in page and "Assistant: unavailable" in page
