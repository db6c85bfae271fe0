"""Node configuration: frozen settings loaded from YAML (see config/osteo_node.example.yaml)."""

from osteo_node.config.settings import (
    AllowedCaller,
    ConfigError,
    DicomSettings,
    ListenerTls,
    LoggingSettings,
    QueueSettings,
    Settings,
    StorageSettings,
    load_settings,
    settings_from_mapping,
)

__all__ = [
    "AllowedCaller",
    "ConfigError",
    "DicomSettings",
    "ListenerTls",
    "LoggingSettings",
    "QueueSettings",
    "Settings",
    "StorageSettings",
    "load_settings",
    "settings_from_mapping",
]
