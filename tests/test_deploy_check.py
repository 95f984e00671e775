"""Production settings pass Django's deployment checklist, and refuse to start without a secret key."""

import os
import secrets
import subprocess
import sys

from .conftest import ROOT

CHECK = [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"]


def production_env(tmp_path, **extra: str) -> dict[str, str]:
    # The services (DATABASE_URL, REDIS_URL) of this run, if any, pass through: both modes must be clean.
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    env.update(
        DJANGO_DEBUG="0",
        DJANGO_SECRET_KEY=secrets.token_urlsafe(64),
        DJANGO_ALLOWED_HOSTS="mediachat.example.com",
        MEDIACHAT_DATA_DIR=str(tmp_path),
    )
    env.update(extra)
    return env


def run_check(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(CHECK, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_check_deploy_passes_in_production(tmp_path):
    result = run_check(production_env(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_check_deploy_flags_a_weak_secret_key(tmp_path):
    result = run_check(production_env(tmp_path, DJANGO_SECRET_KEY="too-short"))
    assert result.returncode != 0
    assert "security.W009" in result.stderr + result.stdout


def test_production_refuses_to_start_without_a_secret_key(tmp_path):
    env = production_env(tmp_path)
    del env["DJANGO_SECRET_KEY"]
    result = run_check(env)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr and "DJANGO_SECRET_KEY must be set" in result.stderr
