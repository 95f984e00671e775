"""The REST API's catalog, schema, docs and error shape, against the real database.

The small factories here are shared with tests/test_api_readers.py.
"""

import itertools
import re
import secrets
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.utils import timezone
from rest_framework.test import APIClient

from mediachat import api_urls
from mediachat.models import Conversation, Message
from personalization.identity import SESSION_READER_KEY, ReaderRef
from personalization.models import Author, Content, Section, Tag

pytestmark = pytest.mark.django_db

_seq = itertools.count(1)


# --- factories ---------------------------------------------------------------------------------


def _slug(text: str, n: int) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") + f"-{n}"


def make_section(name: str | None = None) -> Section:
    n = next(_seq)
    name = name or f"Section {n}"
    return Section.objects.create(name=name, slug=_slug(name, n))


def make_tag(name: str | None = None) -> Tag:
    n = next(_seq)
    name = name or f"tag{n}"
    return Tag.objects.create(name=name, slug=_slug(name, n))


def make_author(name: str | None = None) -> Author:
    n = next(_seq)
    name = name or f"Author {n}"
    return Author.objects.create(name=name, slug=f"author-{n}")


def make_content(
    title: str | None = None,
    *,
    status: str = Content.Status.PUBLISHED,
    published_at: datetime | None = None,
    section: Section | None = None,
    tags: tuple[Tag, ...] = (),
    authors: tuple[Author, ...] = (),
    **fields,
) -> Content:
    n = next(_seq)
    title = title or f"Item {n}"
    if published_at is None and status == Content.Status.PUBLISHED:
        published_at = timezone.now() - timedelta(hours=n)
    content = Content.objects.create(
        title=title,
        slug=_slug(title, n),
        status=status,
        published_at=published_at,
        section=section,
        **fields,
    )
    content.tags.set(tags)
    content.authors.set(authors)
    return content


def make_user(username: str | None = None):
    # No password: hashing one costs a noticeable fraction of a second, and the tests sign in with force_login.
    return get_user_model().objects.create_user(username=username or f"reader{next(_seq)}", password=None)


def api_client(*, user=None, enforce_csrf_checks: bool = False) -> APIClient:
    """A client from a random address of its own: throttle counts (kept in Redis between runs) never leak."""
    n = secrets.randbelow(2**24)
    address = f"10.{n >> 16}.{(n >> 8) & 255}.{n & 255}"
    client = APIClient(enforce_csrf_checks=enforce_csrf_checks, REMOTE_ADDR=address)
    if user is not None:
        client.force_login(user)
    return client


def anonymous_reader(client: APIClient) -> ReaderRef:
    """Start the client's anonymous reader session through the API, as a browser would."""
    response = client.get("/api/reader/")
    assert response.status_code == 200 and response.json()["authenticated"] is False
    return ReaderRef(user_id=None, session_key=client.session[SESSION_READER_KEY])


def make_conversation(reader: ReaderRef, title: str = "A chat") -> Conversation:
    return Conversation.objects.create(title=title, **reader.owner_fields())


def make_message(
    conversation: Conversation, text: str = "hello", *, role: str = Message.Role.USER, cited: tuple[Content, ...] = ()
) -> Message:
    message = Message.objects.create(conversation=conversation, role=role, text=text)
    message.cited.set(cited)
    return message


# --- catalog -------------------------------------------------------------------------------------


def slugs(response) -> list[str]:
    assert response.status_code == 200, response.content
    return [item["slug"] for item in response.json()["results"]]


def test_list_shows_only_published_items_and_detail_hides_the_rest():
    now = timezone.now()
    visible = make_content("Visible", published_at=now - timedelta(hours=1))
    draft = make_content("Draft", status=Content.Status.DRAFT)
    archived = make_content("Archived", status=Content.Status.ARCHIVED, published_at=now - timedelta(days=3))
    scheduled = make_content("Scheduled", published_at=now + timedelta(days=1))
    embargoed = make_content("Embargoed", published_at=now - timedelta(days=1), embargo_until=now + timedelta(hours=2))
    out_of_embargo = make_content(
        "Embargo over", published_at=now - timedelta(days=2), embargo_until=now - timedelta(hours=1)
    )
    client = api_client()

    assert slugs(client.get("/api/content/")) == [visible.slug, out_of_embargo.slug]
    for hidden in (draft, archived, scheduled, embargoed):
        response = client.get(f"/api/content/{hidden.slug}/")
        assert response.status_code == 404
        assert response.json()["code"] == "not_found"
        assert hidden.slug not in slugs(client.get("/api/content/", {"q": hidden.title}))
    assert client.get(f"/api/content/{visible.slug}/").status_code == 200


def test_items_carry_section_tags_authors_url_and_dates():
    section = make_section("Science")
    tag = make_tag("space")
    author = make_author("Ada Writer")
    own_page = make_content(
        "Moon landing", section=section, tags=(tag,), authors=(author,), summary="Sum", body="Long body", kind="video"
    )
    elsewhere = make_content("Elsewhere", url="https://example.org/story")
    client = api_client()

    item = client.get("/api/content/").json()["results"][0]
    assert item["slug"] == own_page.slug
    assert item["section"] == {"slug": section.slug, "name": "Science"}
    assert item["tags"] == [{"slug": tag.slug, "name": "space"}]
    assert item["authors"] == [{"slug": author.slug, "name": "Ada Writer"}]
    assert item["url"] == f"http://testserver/c/{own_page.slug}/"
    assert item["kind"] == "video" and item["summary"] == "Sum" and item["language"] == "en"
    assert datetime.fromisoformat(item["published_at"]) == own_page.published_at
    assert "updated_at" in item and "body" not in item

    detail = client.get(f"/api/content/{own_page.slug}/").json()
    assert detail["body"] == "Long body" and detail["id"] == own_page.id
    assert client.get(f"/api/content/{elsewhere.slug}/").json()["url"] == "https://example.org/story"


def test_filters_by_section_tag_author_kind_and_language():
    science, culture = make_section("Science"), make_section("Culture")
    space, music = make_tag("space"), make_tag("music")
    ada, bo = make_author("Ada"), make_author("Bo")
    a = make_content("A", section=science, tags=(space,), authors=(ada,), kind="article")
    b = make_content("B", section=science, tags=(space, music), authors=(bo,), kind="podcast", language="de")
    c = make_content("C", section=culture, tags=(music,), authors=(ada, bo), kind="podcast")
    make_content("Draft in science", status=Content.Status.DRAFT, section=science)
    client = api_client()

    assert slugs(client.get("/api/content/", {"section": science.slug})) == [a.slug, b.slug]
    assert slugs(client.get("/api/content/", {"tag": music.slug})) == [b.slug, c.slug]
    assert slugs(client.get("/api/content/", {"author": ada.slug})) == [a.slug, c.slug]
    assert slugs(client.get("/api/content/", {"kind": "podcast"})) == [b.slug, c.slug]
    assert slugs(client.get("/api/content/", {"language": "de"})) == [b.slug]
    assert slugs(client.get("/api/content/", {"section": science.slug, "tag": music.slug, "kind": "podcast"})) == [
        b.slug
    ]
    assert slugs(client.get("/api/content/", {"section": "no-such-section"})) == []


def test_published_date_range_is_inclusive_by_day():
    march_10 = make_content("Ten", published_at=datetime(2024, 3, 10, 23, 30, tzinfo=UTC))
    march_20 = make_content("Twenty", published_at=datetime(2024, 3, 20, 0, 0, tzinfo=UTC))
    april_1 = make_content("April", published_at=datetime(2024, 4, 1, 8, 0, tzinfo=UTC))
    client = api_client()

    assert slugs(client.get("/api/content/", {"published_after": "2024-03-10"})) == [
        april_1.slug,
        march_20.slug,
        march_10.slug,
    ]
    assert slugs(client.get("/api/content/", {"published_after": "2024-03-11"})) == [april_1.slug, march_20.slug]
    assert slugs(client.get("/api/content/", {"published_before": "2024-03-20"})) == [march_20.slug, march_10.slug]
    assert slugs(client.get("/api/content/", {"published_after": "2024-03-11", "published_before": "2024-03-31"})) == [
        march_20.slug
    ]
    assert slugs(client.get("/api/content/", {"published_before": "9999-12-31"})) == [
        april_1.slug,
        march_20.slug,
        march_10.slug,
    ]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"kind": "essay"}, "kind"),
        ({"published_after": "yesterday"}, "published_after"),
        ({"published_before": "2024-02-30"}, "published_before"),
        ({"published_after": "2024-05-01", "published_before": "2024-04-01"}, "published_before"),
        ({"section": "not a slug!"}, "section"),
        ({"q": "x" * 201}, "q"),
        ({"q": "nul\x00byte"}, "q"),
        ({"language": "l" * 17}, "language"),
    ],
)
def test_bad_filters_get_a_400_naming_the_field(params, field):
    make_content("Something")
    response = api_client().get("/api/content/", params)
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid_field"
    assert field in body["errors"]
    assert body["detail"].startswith(f"{field}: ")


def test_search_ranks_by_relevance_and_combines_with_filters():
    science = make_section("Science")
    title_hit = make_content("Volcano eruption explained", section=science, published_at=timezone.now() - timedelta(30))
    body_hit = make_content("Island life", body="A volcano sits on the island.", published_at=timezone.now())
    make_content("Cooking pasta", body="Boil water.")
    make_content("Volcano draft", status=Content.Status.DRAFT)
    client = api_client()

    assert slugs(client.get("/api/content/", {"q": "volcano"})) == [title_hit.slug, body_hit.slug]
    assert slugs(client.get("/api/content/", {"q": "volcano", "section": science.slug})) == [title_hit.slug]
    assert slugs(client.get("/api/content/", {"q": "volcano", "kind": "podcast"})) == []
    assert slugs(client.get("/api/content/", {"q": "submarine"})) == []
    assert len(slugs(client.get("/api/content/", {"q": "   "}))) == 3  # blank: the plain list


def test_pagination_and_bad_pages():
    for _ in range(5):
        make_content()
    client = api_client()
    body = client.get("/api/content/", {"page_size": 2, "page": 2}).json()
    assert body["count"] == 5 and len(body["results"]) == 2 and body["next"] and body["previous"]
    response = client.get("/api/content/", {"page": 99})
    assert response.status_code == 404 and response.json()["code"] == "not_found"
    response = client.get("/api/content/", {"page": "abc"})
    assert response.status_code == 404 and response.json()["code"] == "not_found"


def test_catalog_query_counts_do_not_grow_with_items(django_assert_max_num_queries):
    section = make_section()
    tags = [make_tag() for _ in range(3)]
    authors = [make_author() for _ in range(2)]
    for n in range(15):
        make_content(f"Galaxy story {n}", section=section, tags=tuple(tags), authors=tuple(authors))
    client = api_client()

    with django_assert_max_num_queries(4):  # count, page, tags, authors
        assert len(slugs(client.get("/api/content/", {"page_size": 15}))) == 15
    with django_assert_max_num_queries(4):
        assert len(slugs(client.get("/api/content/", {"page_size": 15, "tag": tags[0].slug}))) == 15
    with django_assert_max_num_queries(5):  # search: candidate ids, candidates, tags, authors, filter
        assert len(slugs(client.get("/api/content/", {"page_size": 15, "q": "galaxy", "section": section.slug}))) == 15
    slug = Content.objects.first().slug
    with django_assert_max_num_queries(3):
        assert client.get(f"/api/content/{slug}/").status_code == 200


# --- schema, docs, routing and errors ------------------------------------------------------------

API_PATHS = {
    "/api/reader/": {"get"},
    "/api/content/": {"get"},
    "/api/content/{slug}/": {"get"},
    "/api/conversations/": {"get"},
    "/api/conversations/{id}/": {"get"},
    "/api/conversations/{id}/messages/": {"get"},
    "/api/messages/{id}/feedback/": {"post"},
    "/api/interactions/": {"get", "post"},
}


def test_schema_lists_every_endpoint():
    response = api_client().get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    for path, methods in API_PATHS.items():
        assert path in schema["paths"], path
        assert methods <= set(schema["paths"][path]), path
    # Every route of mediachat.api_urls but the schema and its pages, so a new endpoint cannot be left out.
    for pattern in api_urls.urlpatterns:
        route = "/api/" + re.sub(r"<(?:int:)?pk>", "{id}", re.sub(r"<slug:(\w+)>", r"{\1}", str(pattern.pattern)))
        if pattern.name not in ("api-schema", "api-docs", "api-redoc"):
            assert route in schema["paths"], route
    post = schema["paths"]["/api/interactions/"]["post"]
    assert set(post["requestBody"]["content"]) == {"application/json", "text/plain"}


def test_schema_validates_without_warnings(tmp_path):
    out = tmp_path / "schema.yaml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out))
    assert "/api/interactions/" in out.read_text()


@pytest.mark.parametrize("page", ["/api/docs/", "/api/redoc/"])
def test_docs_pages_load_their_assets_locally(page):
    client = api_client()
    response = client.get(page)
    assert response.status_code == 200
    html = response.content.decode()
    assert "cdn.jsdelivr" not in html and "unpkg.com" not in html
    scripts = re.findall(r'<script src="([^"]+)"', html)
    assert scripts and all(s.startswith("/static/drf_spectacular_sidecar/") for s in scripts)
    asset = client.get(scripts[0])
    assert asset.status_code == 200
    assert b"".join(asset.streaming_content if asset.streaming else [asset.content])[:100]


def test_health_route_still_answers():
    response = api_client().get("/api/health/")
    assert response.status_code == 200 and response.json()["checks"]["database"] == "ok"


def test_unknown_api_routes_and_methods_answer_json():
    client = api_client()
    response = client.get("/api/nothing-here/")
    assert response.status_code == 404 and response.json() == {"code": "not_found", "detail": "No such endpoint."}
    response = client.get("/api/messages/abc/feedback/")
    assert response.status_code == 404 and response.json()["code"] == "not_found"
    response = client.delete("/api/content/")
    assert response.status_code == 405 and response.json()["code"] == "method_not_allowed"
    response = client.get("/api/content/not-there/")
    assert response.json() == {"code": "not_found", "detail": "No published content 'not-there'."}


def test_throttled_clients_get_rate_limited_json(monkeypatch):
    from rest_framework.throttling import SimpleRateThrottle

    monkeypatch.setattr(
        SimpleRateThrottle, "THROTTLE_RATES", {"anon": "3/min", "user": "3/min", "interactions": "3/min"}
    )
    client = api_client()
    codes = [client.get("/api/content/").status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    response = client.get("/api/content/")
    assert response.json()["code"] == "rate_limited" and int(response["Retry-After"]) > 0
    assert api_client().get("/api/content/").status_code == 200  # another address has its own budget
