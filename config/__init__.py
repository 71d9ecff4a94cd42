"""One settings object, read from the environment (and an optional `.env` file).

The bottom layer: every package (vision_model, knowledge_base, ingest, bot) reads its
configuration here and none of them is imported from here, so no lower layer has to import the
bot to learn a path. An operator has one list of variables to learn (see docker/.env.example). Secrets are
`SecretStr`: they print as '**********' and never reach a log line.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Runtime state (Chroma index, chat memory) lives here unless configured otherwise.
DEFAULT_VAR_DIR = PROJECT_ROOT / "var"
# The real data sits beside the checkout; it is never copied into the repository.
DEFAULT_SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"


class MissingSetting(RuntimeError):
    """A required setting is absent; the message names the environment variable."""


def _id_set(raw: str) -> frozenset[str]:
    return frozenset(part.strip() for part in raw.replace(";", ",").split(",") if part.strip())


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    # --- platforms ------------------------------------------------------------------
    telegram_bot_token: SecretStr | None = Field(default=None, alias="TELEGRAM_BOT_TOKEN")
    telegram_admin_ids: str = Field(default="", alias="TELEGRAM_ADMIN_IDS")
    telegram_webhook_url: str | None = Field(default=None, alias="TELEGRAM_WEBHOOK_URL")
    telegram_webhook_secret: SecretStr | None = Field(default=None, alias="TELEGRAM_WEBHOOK_SECRET")
    telegram_webhook_port: int = Field(default=8443, alias="TELEGRAM_WEBHOOK_PORT")
    discord_bot_token: SecretStr | None = Field(default=None, alias="DISCORD_BOT_TOKEN")
    discord_admin_ids: str = Field(default="", alias="DISCORD_ADMIN_IDS")
    discord_sharded: bool = Field(default=False, alias="DISCORD_SHARDED")
    # Touched every 30 s while the Discord gateway is connected; the liveness probe checks its age.
    discord_health_file: Path = Field(default=DEFAULT_VAR_DIR / "discord-alive", alias="DISCORD_HEALTH_FILE")

    # --- model ----------------------------------------------------------------------
    # Empty means the bundled release in vision_model/release.
    model_dir: Path | None = Field(default=None, alias="MODEL_DIR")
    # Or a registered model: models:/<name>@champion (vision_model.registry; MLFLOW_TRACKING_URI says where the
    # registry is). The engine looks every MODEL_CHECK_S seconds whether the alias moved and swaps the new model in.
    model_uri: str | None = Field(default=None, alias="MODEL_URI")
    model_check_s: float = Field(default=30.0, alias="MODEL_CHECK_S")
    # A JSON line per identification (model version, top-k, verdict; no user, no photo) for
    # `python -m vision_model monitor`; unset: none written.
    prediction_log: Path | None = Field(default=None, alias="PREDICTION_LOG")
    # Remote mode: bots call this HTTP API instead of loading the model themselves.
    inference_url: str | None = Field(default=None, alias="INFERENCE_URL")
    api_key: SecretStr | None = Field(default=None, alias="API_KEY")
    # The address the API is published on (Compose sets it from API_BIND). The API refuses to
    # start without API_KEY when this, or its own --host outside a container, is not loopback.
    api_public_bind: str | None = Field(default=None, alias="API_PUBLIC_BIND")
    # The web page's session cookies are signed with this (set it when several replicas serve the
    # page; unset, each process draws its own and sessions end with it) and last this long.
    web_session_secret: SecretStr | None = Field(default=None, alias="WEB_SESSION_SECRET")
    web_session_hours: float = Field(default=12.0, alias="WEB_SESSION_HOURS")

    # --- knowledge base -------------------------------------------------------------
    chroma_path: Path = Field(default=DEFAULT_VAR_DIR / "chroma", alias="CHROMA_PATH")
    chroma_url: str | None = Field(default=None, alias="CHROMA_URL")  # e.g. http://chroma:8000
    # The Chroma server's token (its CHROMA_SERVER_AUTHN_CREDENTIALS); sent as a Bearer token.
    chroma_token: SecretStr | None = Field(default=None, alias="CHROMA_TOKEN")
    guides_dir: Path = Field(default=DEFAULT_SHARED_DATA / "guides", alias="GUIDES_DIR")
    # This machine's re-ingest lock (one build per machine; across replicas the lease in Chroma holds).
    # Default: beside CHROMA_PATH, or var/ingest.lock with a Chroma server.
    ingest_lock_file: Path | None = Field(default=None, alias="INGEST_LOCK_FILE")
    llm_base_url: str | None = Field(default=None, alias="LLM_BASE_URL")  # OpenAI-compatible or Ollama
    llm_model: str | None = Field(default=None, alias="LLM_MODEL")
    llm_api_key: SecretStr | None = Field(default=None, alias="LLM_API_KEY")

    # --- bot state and limits -------------------------------------------------------
    database_url: str = Field(default=f"sqlite:///{DEFAULT_VAR_DIR / 'bot.sqlite3'}", alias="DATABASE_URL")
    # Feedback on identifications (bot.feedback): the salt of the user hashes (default: generated once and kept
    # in the database), where consenting users' photos go (a folder or an fsspec URL such as s3://bucket/x),
    # and how long votes and photos are kept.
    feedback_salt: SecretStr | None = Field(default=None, alias="FEEDBACK_SALT")
    feedback_photos: str = Field(default=str(DEFAULT_VAR_DIR / "feedback" / "photos"), alias="FEEDBACK_PHOTOS")
    feedback_retention_days: float = Field(default=365.0, alias="FEEDBACK_RETENTION_DAYS")
    max_image_bytes: int = Field(default=10 * 1024 * 1024, alias="MAX_IMAGE_BYTES")
    max_image_pixels: int = Field(default=40_000_000, alias="MAX_IMAGE_PIXELS")
    max_images_per_observation: int = Field(default=6, alias="MAX_IMAGES_PER_OBSERVATION")
    photo_rate_limit: int = Field(default=10, alias="PHOTO_RATE_LIMIT")  # photos per window per user
    photo_rate_window_s: float = Field(default=60.0, alias="PHOTO_RATE_WINDOW_S")
    # Questions, commands and button presses per window per user (a poisoning always gets first aid).
    message_rate_limit: int = Field(default=30, alias="MESSAGE_RATE_LIMIT")
    message_rate_window_s: float = Field(default=60.0, alias="MESSAGE_RATE_WINDOW_S")
    worker_threads: int = Field(default=2, alias="WORKER_THREADS")
    log_level: str = Field(default="INFO", alias="LOG_LEVEL")

    @property
    def telegram_admins(self) -> frozenset[str]:
        return _id_set(self.telegram_admin_ids)

    @property
    def discord_admins(self) -> frozenset[str]:
        return _id_set(self.discord_admin_ids)

    def require(self, name: str) -> str:
        """Return a secret's value or raise MissingSetting naming its variable."""
        field = type(self).model_fields[name]
        value = getattr(self, name)
        if value is None or (isinstance(value, SecretStr) and not value.get_secret_value()):
            raise MissingSetting(
                f"{field.alias} is not set: export {field.alias}=... (or put it in .env) and try again."
            )
        return value.get_secret_value() if isinstance(value, SecretStr) else str(value)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
