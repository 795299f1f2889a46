"""Kong's core entities as the host keeps them, and the tables the PDK hands to plugins.

Ids follow Kong's DB-less rule (`generate_ids` in `kong/db/schema/others/declarative_config.lua`):
an entity without `id` gets `uuid5(uuid5(NS, <entity table name>), <key>)`, the key being its
`endpoint_key` (service/route name, consumer username) or its `cache_key` string
(`keyauth_credentials:*:<key>`, `plugins:*:<name>:<route>:<service>:<consumer>`). Loading the
same kong.yml twice therefore gives the same ids, here and in Kong.

`as_pdk()` builds the table Kong returns from `kong.router.get_route()` and friends: DAO
entities without null fields (Kong drops `ngx.null` on select), with Kong's defaults.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "DEFAULT_WORKSPACE_ID",
    "Consumer",
    "KeyAuthCredential",
    "PluginEntity",
    "Route",
    "Service",
    "entity_id",
]

_ENTITIES_NAMESPACE = uuid.UUID("fd02801f-0957-4a15-a55a-c8d9606f30b5")


def entity_id(table: str, key: str) -> str:
    """Kong's `generate_uuid(schema.name, key)` for DB-less entities without an id."""
    namespace = uuid.uuid5(_ENTITIES_NAMESPACE, table)
    return str(uuid.uuid5(namespace, key))


DEFAULT_WORKSPACE_ID = entity_id("workspaces", "default")


def _without_nulls(table: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in table.items() if v is not None}


@dataclass(frozen=True)
class Service:
    """An upstream service; `url` in kong.yml is split into protocol/host/port/path."""

    id: str
    name: str | None
    protocol: str = "http"
    host: str = "127.0.0.1"
    port: int = 80
    path: str | None = None
    retries: int = 5
    connect_timeout: int = 60000
    write_timeout: int = 60000
    read_timeout: int = 60000
    enabled: bool = True
    tags: tuple[str, ...] | None = None
    created_at: int = 0

    @property
    def base_url(self) -> str:
        return f"{self.protocol}://{self.host}:{self.port}"

    def as_pdk(self) -> dict[str, Any]:
        return _without_nulls(
            {
                "id": self.id,
                "name": self.name,
                "protocol": self.protocol,
                "host": self.host,
                "port": self.port,
                "path": self.path,
                "retries": self.retries,
                "connect_timeout": self.connect_timeout,
                "write_timeout": self.write_timeout,
                "read_timeout": self.read_timeout,
                "enabled": self.enabled,
                "tags": list(self.tags) if self.tags is not None else None,
                "created_at": self.created_at,
                "updated_at": self.created_at,
                "ws_id": DEFAULT_WORKSPACE_ID,
            }
        )


@dataclass(frozen=True)
class Route:
    """A route: prefix `paths`, optional `methods` and `hosts` filters."""

    id: str
    name: str | None
    service_id: str | None
    paths: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    hosts: tuple[str, ...] = ()
    strip_path: bool = True
    preserve_host: bool = False
    protocols: tuple[str, ...] = ("http", "https")
    regex_priority: int = 0
    path_handling: str = "v0"
    https_redirect_status_code: int = 426
    request_buffering: bool = True
    response_buffering: bool = True
    tags: tuple[str, ...] | None = None
    created_at: int = 0

    def as_pdk(self) -> dict[str, Any]:
        return _without_nulls(
            {
                "id": self.id,
                "name": self.name,
                "protocols": list(self.protocols),
                "methods": list(self.methods) or None,
                "hosts": list(self.hosts) or None,
                "paths": list(self.paths) or None,
                "https_redirect_status_code": self.https_redirect_status_code,
                "regex_priority": self.regex_priority,
                "strip_path": self.strip_path,
                "path_handling": self.path_handling,
                "preserve_host": self.preserve_host,
                "request_buffering": self.request_buffering,
                "response_buffering": self.response_buffering,
                "service": {"id": self.service_id} if self.service_id else None,
                "tags": list(self.tags) if self.tags is not None else None,
                "created_at": self.created_at,
                "updated_at": self.created_at,
                "ws_id": DEFAULT_WORKSPACE_ID,
            }
        )


@dataclass(frozen=True)
class Consumer:
    id: str
    username: str | None = None
    custom_id: str | None = None
    tags: tuple[str, ...] | None = None
    created_at: int = 0

    def as_pdk(self) -> dict[str, Any]:
        return _without_nulls(
            {
                "id": self.id,
                "username": self.username,
                "custom_id": self.custom_id,
                "tags": list(self.tags) if self.tags is not None else None,
                "created_at": self.created_at,
                "updated_at": self.created_at,
                "ws_id": DEFAULT_WORKSPACE_ID,
            }
        )


@dataclass(frozen=True)
class KeyAuthCredential:
    id: str
    key: str
    consumer_id: str
    tags: tuple[str, ...] | None = None
    created_at: int = 0

    def as_pdk(self) -> dict[str, Any]:
        return _without_nulls(
            {
                "id": self.id,
                "consumer": {"id": self.consumer_id},
                "key": self.key,
                "tags": list(self.tags) if self.tags is not None else None,
                "created_at": self.created_at,
                "ws_id": DEFAULT_WORKSPACE_ID,
            }
        )


@dataclass(frozen=True)
class PluginEntity:
    """A plugin configuration; `config` is filled (defaults) once validated."""

    id: str
    name: str
    config: Mapping[str, Any] = field(default_factory=dict)
    enabled: bool = True
    route_id: str | None = None
    service_id: str | None = None
    consumer_id: str | None = None
    instance_name: str | None = None
    tags: tuple[str, ...] | None = None

    @property
    def is_global(self) -> bool:
        return not (self.route_id or self.service_id or self.consumer_id)
