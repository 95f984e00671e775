"""Settings for mediachat: one module, read from the environment.

Nothing set: the embedded default (SQLite, in-memory channel layer, a Celery broker on SQLite).
``DATABASE_URL`` and ``REDIS_URL`` set: PostgreSQL and Redis, for many processes.
``DJANGO_DEBUG=0`` with ``DJANGO_SECRET_KEY`` and ``DJANGO_ALLOWED_HOSTS``: production hardening.
"""

from pathlib import Path

import environ
from celery.schedules import crontab

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DATA_DIR = Path(env.str("MEDIACHAT_DATA_DIR", default=str(BASE_DIR / "var")))
DATA_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = env.bool("DJANGO_DEBUG", default=True)
# The fallback key exists only so that `make demo` works with nothing configured; production
# (DEBUG off) refuses to start without a real one.
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="" if not DEBUG else "insecure-demo-key-change-me")
if not SECRET_KEY:
    raise environ.ImproperlyConfigured("DJANGO_SECRET_KEY must be set when DJANGO_DEBUG is off")
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "channels",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "django_celery_results",
    "mediachat",
    "personalization",
    "training",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "mediachat.urls"
WSGI_APPLICATION = "mediachat.wsgi.application"
ASGI_APPLICATION = "mediachat.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{DATA_DIR / 'mediachat.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Web server, worker and beat write to one file: WAL plus a busy timeout avoid "database is locked".
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }
    # A file, not memory, so that servers and workers started by the tests share the test database.
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / "test.sqlite3")}
else:
    DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("DATABASE_CONN_MAX_AGE", default=60))
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env.str("REDIS_URL", default="")

# --- Channels -------------------------------------------------------------------------------
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            # redis-py 8's 5 s socket timeout equals the layer's 5 s blocking pop and drops consumers.
            "CONFIG": {"hosts": [{"address": REDIS_URL, "socket_timeout": 10}], "capacity": 1000},
        }
    }
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- Celery ---------------------------------------------------------------------------------
CELERY_BROKER_URL = REDIS_URL or f"sqla+sqlite:///{DATA_DIR / 'celery-broker.sqlite3'}"
CELERY_RESULT_BACKEND = "django-db"
CELERY_RESULT_EXTENDED = True
CELERY_CACHE_BACKEND = "default"
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {
    "training.tasks.*": {"queue": "training"},
    "personalization.tasks.intent_*": {"queue": "nlu"},
    "personalization.understanding.tasks.*": {"queue": "nlu"},
}
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = True
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CELERY_TASK_SOFT_TIME_LIMIT", default=300)
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=360)
# Redis redelivers a task that runs past the visibility timeout: keep it above every time limit.
# (The SQLAlchemy transport hands its options to create_engine, which refuses this one.)
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 4 * 3600} if REDIS_URL else {}
CELERY_TASK_TRACK_STARTED = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_TIMEZONE = "UTC"
# django-celery-beat's DatabaseScheduler copies these into its tables at start; edit them in the admin.
CELERY_BEAT_SCHEDULE = {
    "recommender-refresh": {"task": "training.tasks.recommender_refresh", "schedule": crontab(hour=3, minute=15)},
    "training-runs-fail-lost": {"task": "training.tasks.training_runs_fail_lost", "schedule": crontab(minute=40)},
    "conversations-close-stale": {"task": "mediachat.tasks.conversations_close_stale", "schedule": 300.0},
    "contents-embed-pending": {"task": "personalization.embeddings.tasks.contents_embed_pending", "schedule": 120.0},
    "feeds-poll-due": {"task": "personalization.ingest.feed_tasks.feeds_poll_due", "schedule": 60.0},
    "gazetteer-rebuild": {
        "task": "personalization.understanding.tasks.gazetteer_rebuild",
        "schedule": crontab(hour=2, minute=45),
    },
    "messages-classify-pending": {
        "task": "personalization.understanding.tasks.messages_classify_pending",
        "schedule": 60.0,
    },
}

# --- Auth, i18n, static ---------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "chat"
LOGOUT_REDIRECT_URL = "chat"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)  # whitenoise warns on every request while it is missing
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
WHITENOISE_USE_FINDERS = DEBUG
MEDIA_ROOT = DATA_DIR / "media"
MODEL_DIR = Path(env.str("MEDIACHAT_MODEL_DIR", default=str(DATA_DIR / "models")))

# --- REST API -------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_AUTHENTICATION_CLASSES": ["rest_framework.authentication.SessionAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 20,
    "DEFAULT_FILTER_BACKENDS": [],
    "DEFAULT_THROTTLE_CLASSES": ["rest_framework.throttling.AnonRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {
        "anon": env.str("API_ANON_RATE", default="600/min"),
        "user": env.str("API_USER_RATE", default="1200/min"),
        "interactions": env.str("API_INTERACTIONS_RATE", default="240/min"),
    },
}
SPECTACULAR_SETTINGS = {
    "TITLE": "mediachat API",
    "DESCRIPTION": "Catalog, conversations, feedback and reading signals of mediachat.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI and Redoc served from drf-spectacular-sidecar's static files: no CDN is needed.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {
        "ContentKindEnum": "personalization.models.Content.Kind",
        "InteractionKindEnum": "personalization.models.Interaction.Kind",
    },
}

# --- Chat ------------------------------------------------------------------------------------
MEDIACHAT = {
    "MAX_MESSAGE_CHARS": env.int("MEDIACHAT_MAX_MESSAGE_CHARS", default=2000),
    # Token bucket per socket: sustained messages per second and burst size.
    "WS_RATE_PER_S": env.float("MEDIACHAT_WS_RATE_PER_S", default=2.0),
    "WS_RATE_BURST": env.int("MEDIACHAT_WS_RATE_BURST", default=5),
    # Messages a socket sends less than this apart, each before the last one's reply ended, are a burst:
    # only its last message is answered, once this long passes without another, with the earlier ones in
    # its context (docs/protocol.md).
    "REPLY_BURST_MS": env.float("MEDIACHAT_REPLY_BURST_MS", default=300.0),
    # The engine the websocket consumers call (docs/engine.md); empty: ENGINE_SERVED, in this process (the
    # embedded default: the engine's scheduler runs in a thread of the ASGI process). `run_platform` with
    # Redis sets it to mediachat.engine.remote.ChannelLayerEngine, the client of its `run_engine`
    # processes, so that web processes hold no model. ENGINE_SERVED is what those processes run.
    "ENGINE": env.str("MEDIACHAT_ENGINE", default=""),
    "ENGINE_SERVED": env.str("MEDIACHAT_ENGINE_SERVED", default="mediachat.engine.lm.LMEngine"),
    "ENGINE_CHANNEL": env.str("MEDIACHAT_ENGINE_CHANNEL", default="mediachat.engine"),
    # A chat model folder (any transformers causal LM saved with a chat template); empty: the active
    # chat-lm ModelVersion of the registry.
    "CHAT_MODEL": env.str("MEDIACHAT_CHAT_MODEL", default=""),
    "ENGINE_DEVICE": env.str("MEDIACHAT_ENGINE_DEVICE", default="auto"),  # auto, cpu, cuda, cuda:1
    # torch threads of the engine (0: one per core when the engine has the machine, else 1).
    "ENGINE_THREADS": env.int("MEDIACHAT_ENGINE_THREADS", default=0),
    "ENGINE_MAX_BATCH": env.int("MEDIACHAT_ENGINE_MAX_BATCH", default=16),  # requests decoded together
    "ENGINE_QUEUE": env.int("MEDIACHAT_ENGINE_QUEUE", default=64),  # requests waiting; beyond: `busy`
    "ENGINE_TIMEOUT_S": env.float("MEDIACHAT_ENGINE_TIMEOUT_S", default=60.0),  # per request
    # Engine processes (run_engine): how long a request may wait to be taken before `engine_unavailable`
    # (their clocks must agree with the web processes' within a few seconds: requests carry an expiry),
    # and how many earlier turns a web process sends with each request.
    "ENGINE_ACCEPT_TIMEOUT_S": env.float("MEDIACHAT_ENGINE_ACCEPT_TIMEOUT_S", default=5.0),
    "ENGINE_HISTORY_TURNS": env.int("MEDIACHAT_ENGINE_HISTORY_TURNS", default=8),
    # Prompt budget in tokens (0: the model's context length less the reply's max_new_tokens).
    "CONTEXT_TOKENS": env.int("MEDIACHAT_CONTEXT_TOKENS", default=0),
    # Decoding defaults (mediachat/engine/decoding.py); the admin's default DecodingProfile overrides them.
    "DECODING": env.json("MEDIACHAT_DECODING", default={}),
    # An OpenAI-compatible server (vLLM, `transformers serve`) for mediachat.engine.openai_compat.OpenAIEngine.
    "OPENAI_BASE_URL": env.str("MEDIACHAT_OPENAI_BASE_URL", default=""),
    "OPENAI_MODEL": env.str("MEDIACHAT_OPENAI_MODEL", default=""),
    "OPENAI_API_KEY": env.str("MEDIACHAT_OPENAI_API_KEY", default=""),
    "RECOMMENDATIONS": env.int("MEDIACHAT_RECOMMENDATIONS", default=3),
    # Pause between streamed words of a reply written at once (the retrieval engine), in milliseconds.
    "STREAM_DELAY_MS": env.float("MEDIACHAT_STREAM_DELAY_MS", default=25.0),
    "RECENCY_HALF_LIFE_DAYS": env.float("MEDIACHAT_RECENCY_HALF_LIFE_DAYS", default=90.0),
    # Embeddings of catalog items (personalization/embeddings): the embedder class, its torch threads
    # (0 keeps torch's own count, which follows OMP_NUM_THREADS), and whether search blends them in.
    "EMBEDDER": env.str(
        "MEDIACHAT_EMBEDDER", default="personalization.embeddings.backends.SentenceTransformerEmbedder"
    ),
    "EMBEDDER_THREADS": env.int("MEDIACHAT_EMBEDDER_THREADS", default=0),
    "SEMANTIC_SEARCH": env.bool("MEDIACHAT_SEMANTIC_SEARCH", default=True),
    # Languages the importers detect (ISO 639-1); text in any other comes out as "".
    "INGEST_LANGUAGES": env.list("MEDIACHAT_INGEST_LANGUAGES", default=["en", "fr", "de", "es", "it", "pt", "nl"]),
    # Near-duplicate search covers this many most recent items (about 3 KB of memory each).
    "INGEST_NEAR_DUP_WINDOW": env.int("MEDIACHAT_INGEST_NEAR_DUP_WINDOW", default=20000),
    # Feed polls: seconds allowed for each connect and read, and the largest feed body taken, in bytes.
    "FEED_TIMEOUT_S": env.float("MEDIACHAT_FEED_TIMEOUT_S", default=10.0),
    "FEED_MAX_BYTES": env.int("MEDIACHAT_FEED_MAX_BYTES", default=10 * 1024 * 1024),
}

# --- Production hardening (DEBUG off) ---------------------------------------------------------
if not DEBUG:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env.int("DJANGO_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_CONTENT_TYPE_NOSNIFF = True
    X_FRAME_OPTIONS = "DENY"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
