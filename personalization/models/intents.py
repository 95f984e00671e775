"""Understanding readers: intents with their examples, editors' keyword rules, entity synonyms and the gazetteer.

The intent set is the editors': they add intents and examples in the admin or import them, and a training run
turns the examples into a classifier (a `training.ModelVersion` of kind intent). Keyword and regex rules are
checked before the classifier and decide when they match. The gazetteer is rebuilt from the catalog (nightly
and on demand); synonyms are the editors' and survive rebuilds.
"""

from django.db import models

OUT_OF_SCOPE = "out_of_scope"


class Intent(models.Model):
    class Action(models.TextChoices):
        # What the chat path does with a message of this intent.
        RECOMMEND = "recommend", "Recommend content"
        SEARCH = "search", "Search the catalog"
        LATEST = "latest", "Latest content"
        MORE_LIKE = "more_like", "More like a cited item"
        SUMMARIZE = "summarize", "Summarize a cited item"
        EXPLAIN = "explain", "Explain, grounded in the catalog"
        COMPARE = "compare", "Compare items"
        FOLLOW = "follow", "Follow or unfollow a topic"
        SMALL_TALK = "small_talk", "Small talk (greeting, thanks, goodbye)"
        HELP = "help", "Help"
        SUPPORT = "support", "Account, subscription or feedback"
        FALLBACK = "fallback", "Out of scope"

    name = models.SlugField(max_length=100, unique=True, help_text="A label, e.g. latest_news.")
    description = models.TextField(blank=True)
    action = models.CharField(max_length=16, choices=Action.choices, default=Action.SEARCH)
    is_active = models.BooleanField(default=True, help_text="Inactive intents are left out of training.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class IntentExample(models.Model):
    class Source(models.TextChoices):
        DEFAULT = "default", "Default set"
        EDITOR = "editor", "Editor"
        IMPORT = "import", "Import"
        LABELED = "labeled", "Labeled message"

    intent = models.ForeignKey(Intent, on_delete=models.CASCADE, related_name="examples")
    text = models.CharField(max_length=500)
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.EDITOR)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["intent_id", "id"]
        constraints = [models.UniqueConstraint(fields=["intent", "text"], name="intent_example_unique")]

    def __str__(self) -> str:
        return self.text[:80]


class KeywordRule(models.Model):
    class Kind(models.TextChoices):
        KEYWORD = "keyword", "Keyword or phrase (whole words)"
        REGEX = "regex", "Regular expression"

    intent = models.ForeignKey(Intent, on_delete=models.CASCADE, related_name="rules")
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.KEYWORD)
    pattern = models.CharField(max_length=500)
    case_sensitive = models.BooleanField(default=False)
    priority = models.IntegerField(default=0, help_text="Higher priorities are checked first.")
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-priority", "id"]

    def __str__(self) -> str:
        return f"{self.kind} {self.pattern!r} → {self.intent_id}"


class EntityKind(models.TextChoices):
    SECTION = "section", "Section"
    TAG = "tag", "Tag"
    AUTHOR = "author", "Author"
    CONTENT = "content", "Content title"
    PERSON = "person", "Person"
    PLACE = "place", "Place"
    ORGANIZATION = "organization", "Organisation"
    DATE = "date", "Date or time"


class EntitySynonym(models.Model):
    """An editor's other name for a catalog entity: "AI" for the tag "artificial-intelligence"."""

    kind = models.CharField(max_length=16, choices=EntityKind.choices)
    value = models.CharField(max_length=300, help_text="The canonical value: a slug, a name or a title.")
    synonym = models.CharField(max_length=300)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["kind", "value", "synonym"]
        constraints = [models.UniqueConstraint(fields=["kind", "synonym"], name="entity_synonym_unique")]

    def __str__(self) -> str:
        return f"{self.synonym} → {self.kind}:{self.value}"


class GazetteerEntry(models.Model):
    """One surface form the entity extractor looks for; rebuilt from the catalog and the synonyms."""

    kind = models.CharField(max_length=16, choices=EntityKind.choices)
    surface = models.CharField(max_length=300, help_text="The form as matched, normalised (lower case).")
    value = models.CharField(max_length=300, help_text="The canonical value it stands for.")
    ref_id = models.BigIntegerField(null=True, blank=True, help_text="The catalog row's id, where there is one.")
    weight = models.FloatField(default=1.0, help_text="How often the name appears in the catalog.")
    built_at = models.DateTimeField()

    class Meta:
        ordering = ["kind", "surface"]
        indexes = [models.Index(fields=["kind", "surface"], name="gazetteer_kind_surface_idx")]

    def __str__(self) -> str:
        return f"{self.surface} → {self.kind}:{self.value}"
