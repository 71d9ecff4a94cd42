"""The bot's settings: the project's one settings object (config), under the name the bot's
modules and the docs have always used."""

from config import (  # noqa: F401 - re-exported
    DEFAULT_SHARED_DATA,
    DEFAULT_VAR_DIR,
    PROJECT_ROOT,
    MissingSetting,
    Settings,
    get_settings,
)
