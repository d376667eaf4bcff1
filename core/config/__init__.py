"""Settings: built once from ``config/config.yaml`` and the environment, then passed explicitly.

Precedence: built-in defaults < the YAML file < ``TGB_<SECTION>_<KEY>`` environment variables
(``TGB_DATA_DIR`` for the top-level key). Every value is validated on load, and a bad one fails with
a :class:`~tgbroadcast.core.domain.errors.ConfigError` naming its key. Secrets (the bot token, the
API tokens) never appear in a ``repr`` or an error message.

Modules: ``settings`` (the dataclasses), ``loading`` (``load_settings``), ``database`` (the
database URL). May import: ``core.domain``.
"""

from tgbroadcast.core.config.database import database_url
from tgbroadcast.core.config.loading import DEFAULT_CONFIG_PATH, ENV_PREFIX, load_settings
from tgbroadcast.core.config.settings import (
    ApiToken,
    DatabaseSettings,
    IpNetwork,
    LogSettings,
    NatsSettings,
    ServerSettings,
    Settings,
    TelegramSettings,
    TrackingSettings,
    WebhookSettings,
    WorkerSettings,
)

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "ENV_PREFIX",
    "ApiToken",
    "DatabaseSettings",
    "IpNetwork",
    "LogSettings",
    "NatsSettings",
    "ServerSettings",
    "Settings",
    "TelegramSettings",
    "TrackingSettings",
    "WebhookSettings",
    "WorkerSettings",
    "database_url",
    "load_settings",
]
