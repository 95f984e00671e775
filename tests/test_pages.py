"""The reader-facing pages through Django's test client: chat, content, sign-in and sign-out."""

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse
from django.utils import timezone

from mediachat.models import Conversation
from personalization.identity import SESSION_READER_KEY
from personalization.models import Author, Content, Section, Tag

pytestmark = pytest.mark.django_db

XSS = '<img src=x onerror="window.__xss=1">'


def make_content(slug: str, **fields) -> Content:
    defaults = {
        "kind": Content.Kind.PODCAST,
        "title": f"Volcano watch {XSS}",
        "summary": "How seismologists read the signs before an eruption.",
        "body": "First paragraph about tremor.\n\nSecond paragraph about gas.\nSame paragraph, new line.",
        "status": Content.Status.PUBLISHED,
        "published_at": timezone.now() - timedelta(days=2),
    }
    defaults.update(fields)
    return Content.objects.create(slug=slug, **defaults)


@pytest.fixture
def reader(django_user_model):
    return django_user_model.objects.create_user(username="ada", password="correct horse battery")


def test_chat_page_renders_and_sets_session_and_csrf_cookie(client):
    response = client.get(reverse("chat"))

    assert response.status_code == 200
    assert [t.name for t in response.templates][:2] == ["chat.html", "base.html"]
    assert "csrftoken" in response.cookies
    assert "sessionid" in response.cookies
    assert len(client.session[SESSION_READER_KEY]) == 32
    html = response.content.decode()
    assert 'id="composer-input"' in html
    assert "/static/chat.js" in html and "/static/chat.css" in html
    assert 'id="connection"' in html and 'id="new-conversation"' in html
    # Anonymous readers get a sign-in link back to where they were, not a sign-out form.
    assert f'href="{reverse("login")}?next=/"' in html
    assert reverse("logout") not in html


def test_chat_page_keeps_the_reader_key_across_visits(client):
    client.get(reverse("chat"))
    first = client.session[SESSION_READER_KEY]
    client.get(reverse("chat"))
    assert client.session[SESSION_READER_KEY] == first


def test_static_files_are_served_by_whitenoise(client):
    script = client.get("/static/chat.js")
    style = client.get("/static/chat.css")

    assert script.status_code == 200 and style.status_code == 200
    body = b"".join(script.streaming_content)
    assert b"textContent" in body
    # Every server string goes in as text: nothing in the script hands a string to the HTML parser.
    for sink in (b"innerHTML", b"outerHTML", b"insertAdjacentHTML", b"document.write", b"createContextualFragment"):
        assert sink not in body
    assert script["Content-Type"].startswith(("text/javascript", "application/javascript"))
    assert style["Content-Type"].startswith("text/css")


def test_signed_in_header_shows_a_logout_post_form(client, reader):
    client.force_login(reader)
    html = client.get(reverse("chat")).content.decode()

    assert "ada" in html
    form_start = html.index(f'action="{reverse("logout")}"')
    form = html[html.rindex("<form", 0, form_start) : html.index("</form>", form_start)]
    assert 'method="post"' in form
    assert 'name="csrfmiddlewaretoken"' in form


def test_logout_takes_a_post_and_refuses_a_get(client, reader):
    client.force_login(reader)

    assert client.get(reverse("logout")).status_code == 405
    response = client.post(reverse("logout"))
    assert response.status_code == 302
    assert response["Location"] == reverse("chat")
    assert "_auth_user_id" not in client.session


def test_published_content_page_shows_its_fields_and_escapes_text(client):
    section = Section.objects.create(name="Science", slug="science")
    content = make_content("volcano-watch", section=section, duration_seconds=1500)
    content.authors.add(
        Author.objects.create(name="Ana Gunnarsdóttir", slug="ana"), Author.objects.create(name="Bo Li", slug="bo")
    )
    content.tags.add(Tag.objects.create(name="volcanoes", slug="volcanoes"))

    response = client.get(reverse("content-page", kwargs={"slug": "volcano-watch"}))

    assert response.status_code == 200
    html = response.content.decode()
    assert "Volcano watch &lt;img src=x onerror=&quot;window.__xss=1&quot;&gt;" in html
    assert XSS not in html
    assert "Podcast" in html and "Science" in html
    assert "Ana Gunnarsdóttir and Bo Li" in html
    assert "volcanoes" in html
    assert "How seismologists read the signs" in html
    assert "<p>First paragraph about tremor.</p>" in html
    assert "<p>Second paragraph about gas.<br>Same paragraph, new line.</p>" in html
    assert content.published_at.strftime("%Y") in html
    assert "25 min" in html
    assert f'href="{reverse("chat")}"' in html


@pytest.mark.parametrize(
    "fields",
    [
        {"status": Content.Status.DRAFT},
        {"status": Content.Status.ARCHIVED},
        {"embargo_until": timezone.now() + timedelta(days=1)},
        {"published_at": timezone.now() + timedelta(days=1)},
    ],
    ids=["draft", "archived", "embargoed", "scheduled"],
)
def test_unpublished_content_is_not_found(client, fields):
    make_content("hidden", **fields)

    assert client.get(reverse("content-page", kwargs={"slug": "hidden"})).status_code == 404


def test_unknown_content_is_not_found(client):
    assert client.get(reverse("content-page", kwargs={"slug": "nothing-here"})).status_code == 404


def test_login_page_renders_the_form(client):
    response = client.get(reverse("login") + "?next=/")

    assert response.status_code == 200
    assert response.templates[0].name == "registration/login.html"
    html = response.content.decode()
    assert 'name="username"' in html and 'name="password"' in html
    assert 'name="csrfmiddlewaretoken"' in html
    assert 'name="next" value="/"' in html


def test_login_with_a_wrong_password_shows_an_error(client, reader):
    response = client.post(reverse("login"), {"username": "ada", "password": "wrong"})

    assert response.status_code == 200
    assert 'role="alert"' in response.content.decode()
    assert "_auth_user_id" not in client.session


def test_login_merges_the_anonymous_conversations_into_the_account(client, reader):
    client.get(reverse("chat"))
    reader_key = client.session[SESSION_READER_KEY]
    anonymous = Conversation.objects.create(session_key=reader_key, title="Before signing in")
    someone_else = Conversation.objects.create(session_key="f" * 32, title="Another reader")

    response = client.post(reverse("login"), {"username": "ada", "password": "correct horse battery"})

    assert response.status_code == 302
    assert response["Location"] == reverse("chat")
    anonymous.refresh_from_db()
    someone_else.refresh_from_db()
    assert anonymous.user_id == reader.pk and anonymous.session_key == ""
    assert someone_else.user_id is None and someone_else.session_key == "f" * 32
    assert get_user_model().objects.get(pk=reader.pk).reader_profile.last_seen_at is not None
