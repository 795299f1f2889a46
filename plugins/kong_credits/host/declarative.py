"""Read a Kong 3.x DB-less declarative config (`kong.yml`) into the host's entities.

Supported: `_format_version: "3.0"`; `services` (url, or protocol/host/port/path) with nested
`routes` and `plugins`; top-level `routes` (with `service` by name or id); `consumers`
(username, custom_id, tags, nested `keyauth_credentials` and `plugins`); top-level
`keyauth_credentials`; top-level `plugins` scoped with `route`/`service`/`consumer` by name or
id; regex paths (`~/a/(?<id>[^/]+)$`, as decK writes them) with `regex_priority`. Anything
else (upstreams, certificates, ...) is refused with a clear error
rather than silently ignored: a host that quietly routes differently from Kong is worse than
none. Plugin configs are checked against plugin schemas later (`validate_plugins`), once the
plugin server has told their schemas.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from .. import kong_schema
from .entities import Consumer, KeyAuthCredential, PluginEntity, Route, Service, entity_id
from .router import Router, regex_path

__all__ = ["DeclarativeConfig", "DeclarativeError", "load_declarative", "parse_declarative"]

_TOP_LEVEL = {"_format_version", "_transform", "_comment", "_workspace", "services", "routes",
              "consumers", "plugins", "keyauth_credentials", "upstreams"}
_DEFAULT_PORTS = {"http": 80, "https": 443}


class DeclarativeError(ValueError):
    """The declarative config is invalid; `errors` lists every problem, one per line."""

    def __init__(self, errors: Sequence[str]) -> None:
        self.errors = list(errors)
        super().__init__("declarative config is invalid:\n" + "\n".join(self.errors))


@dataclass(frozen=True)
class DeclarativeConfig:
    """Entities of one kong.yml, with lookups; immutable, replaced whole on reload."""

    services: tuple[Service, ...] = ()
    routes: tuple[Route, ...] = ()
    consumers: tuple[Consumer, ...] = ()
    credentials: tuple[KeyAuthCredential, ...] = ()
    plugins: tuple[PluginEntity, ...] = ()
    locations: Mapping[str, str] = field(default_factory=dict)  # plugin id -> where declared

    def __post_init__(self) -> None:
        object.__setattr__(self, "_services", {s.id: s for s in self.services})
        object.__setattr__(self, "_consumers", {c.id: c for c in self.consumers})
        object.__setattr__(self, "_usernames", {c.username: c for c in self.consumers})
        object.__setattr__(self, "_keys", {c.key: c for c in self.credentials})
        object.__setattr__(self, "router", Router(self.routes, self._services))

    router: Router = field(init=False, repr=False, compare=False)
    _services: dict[str, Service] = field(init=False, repr=False, compare=False)
    _consumers: dict[str, Consumer] = field(init=False, repr=False, compare=False)
    _usernames: dict[str | None, Consumer] = field(init=False, repr=False, compare=False)
    _keys: dict[str, KeyAuthCredential] = field(init=False, repr=False, compare=False)

    def service(self, service_id: str) -> Service | None:
        return self._services.get(service_id)

    def consumer(self, consumer_id: str) -> Consumer | None:
        return self._consumers.get(consumer_id)

    def consumer_by_username(self, username: str) -> Consumer | None:
        return self._usernames.get(username)

    def credential_by_key(self, key: str) -> KeyAuthCredential | None:
        return self._keys.get(key)

    def validate_plugins(
        self, schemas: Mapping[str, Sequence[Mapping[str, Any]]]
    ) -> DeclarativeConfig:
        """Check every plugin config against its schema's config fields; fill defaults.

        `schemas` maps each plugin name the host can run to its `config` record fields.
        Raises DeclarativeError listing each failing field as `<where>: config.<path>: <msg>`.
        """
        errors: list[str] = []
        plugins: list[PluginEntity] = []
        for plugin in self.plugins:
            where = self.locations.get(plugin.id, plugin.name)
            if plugin.name not in schemas:
                errors.append(f"{where}: plugin '{plugin.name}' not enabled; add it to the "
                              "'plugins' configuration property")
                continue
            filled, problems = kong_schema.validate(schemas[plugin.name], plugin.config)
            errors.extend(f"{where}: {kong_schema.format_path(('config', *e.path))}: {e.message}"
                          for e in problems)
            plugins.append(replace(plugin, config=filled))
        if errors:
            raise DeclarativeError(errors)
        return replace(self, plugins=tuple(plugins))


def load_declarative(path: str | Path) -> DeclarativeConfig:
    """Parse the kong.yml at `path` (YAML or JSON)."""
    return parse_declarative(Path(path).read_text())


def parse_declarative(source: str | Mapping[str, Any]) -> DeclarativeConfig:
    """Parse kong.yml text, or an already loaded mapping, into a DeclarativeConfig."""
    data = yaml.safe_load(source) if isinstance(source, str) else source
    if not isinstance(data, Mapping):
        raise DeclarativeError(["expected a YAML mapping at the top level"])
    return _Parser(data).parse()


class _Parser:
    """One pass over the document; collects every error before raising."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self.data = data
        self.errors: list[str] = []
        self.now = int(time.time())
        self.services: list[Service] = []
        self.routes: list[Route] = []
        self.consumers: list[Consumer] = []
        self.credentials: list[KeyAuthCredential] = []
        self.plugins: list[PluginEntity] = []
        self.locations: dict[str, str] = {}
        self.pending_plugins: list[tuple[Mapping[str, Any], str, dict[str, str]]] = []
        self.pending_routes: list[tuple[Mapping[str, Any], str]] = []
        self.pending_credentials: list[tuple[Mapping[str, Any], str]] = []

    def parse(self) -> DeclarativeConfig:
        version = str(self.data.get("_format_version", ""))
        if version not in ("3.0", "3.0.0"):
            self.errors.append(f"_format_version: expected \"3.0\", got {version!r}")
        if self.data.get("upstreams"):
            self.errors.append("upstreams: not supported by the kong-credits host (an empty "
                               "list, as decK writes for specs with one server, is)")
        for key in self.data:
            if key not in _TOP_LEVEL:
                self.errors.append(f"{key}: not supported by the kong-credits host")
        for i, item in enumerate(self._list("services"), start=1):
            self._service(item, f"services[{i}]")
        for i, item in enumerate(self._list("consumers"), start=1):
            self._consumer(item, f"consumers[{i}]")
        for i, item in enumerate(self._list("routes"), start=1):
            self.pending_routes.append((item, f"routes[{i}]"))
        for i, item in enumerate(self._list("keyauth_credentials"), start=1):
            self.pending_credentials.append((item, f"keyauth_credentials[{i}]"))
        for i, item in enumerate(self._list("plugins"), start=1):
            self.pending_plugins.append((item, f"plugins[{i}]", {}))
        for item, where in self.pending_routes:
            self._route(item, where, self._ref(item.get("service"), where, "service"))
        for item, where in self.pending_credentials:
            consumer_id = self._ref(item.get("consumer"), where, "consumer")
            if consumer_id is None:
                self.errors.append(f"{where}: consumer: required field missing")
            else:
                self._credential(item, where, consumer_id)
        for item, where, parents in self.pending_plugins:
            self._plugin(item, where, parents)
        self._check_unique()
        if self.errors:
            raise DeclarativeError(self.errors)
        return DeclarativeConfig(
            services=tuple(self.services),
            routes=tuple(self.routes),
            consumers=tuple(self.consumers),
            credentials=tuple(self.credentials),
            plugins=tuple(self.plugins),
            locations=self.locations,
        )

    # -- helpers ----------------------------------------------------------------------------

    def _list(self, key: str, parent: Mapping[str, Any] | None = None,
              where: str = "") -> list[Mapping[str, Any]]:
        value = (self.data if parent is None else parent).get(key)
        if value is None:
            return []
        label = f"{where}.{key}" if where else key
        if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
            self.errors.append(f"{label}: expected an array of records")
            return []
        return value

    def _tags(self, item: Mapping[str, Any]) -> tuple[str, ...] | None:
        tags = item.get("tags")
        return tuple(str(t) for t in tags) if isinstance(tags, list) else None

    def _ref(self, ref: Any, where: str, kind: str) -> str | None:
        """Resolve a reference by id or name (username for consumers) to an id."""
        if ref is None:
            return None
        if isinstance(ref, Mapping):
            ref = ref.get("id") or ref.get("name") or ref.get("username")
        pools: dict[str, Sequence[Any]] = {
            "service": self.services, "route": self.routes, "consumer": self.consumers,
        }
        name_of: Callable[[Any], Any] = (
            (lambda e: e.username) if kind == "consumer" else (lambda e: e.name)
        )
        for entity in pools[kind]:
            if ref in (entity.id, name_of(entity)):
                return str(entity.id)
        self.errors.append(f"{where}: {kind}: no {kind} named or with id {ref!r}")
        return None

    # -- entities ---------------------------------------------------------------------------

    def _service(self, item: Mapping[str, Any], where: str) -> None:
        name = item.get("name")
        fields: dict[str, Any] = {}
        if "url" in item:
            url = urlsplit(str(item["url"]))
            if url.scheme not in _DEFAULT_PORTS or not url.hostname:
                self.errors.append(f"{where}: url: expected an http(s) URL, got {item['url']!r}")
                return
            fields = {"protocol": url.scheme, "host": url.hostname,
                      "port": url.port or _DEFAULT_PORTS[url.scheme], "path": url.path or None}
        else:
            protocol = item.get("protocol", "http")
            if protocol not in _DEFAULT_PORTS:
                self.errors.append(f"{where}: protocol: only http and https are supported")
                return
            if not item.get("host"):
                self.errors.append(f"{where}: host: required field missing")
                return
            fields = {"protocol": protocol, "host": item["host"],
                      "port": int(item.get("port", _DEFAULT_PORTS[protocol])),
                      "path": item.get("path")}
        for key in ("retries", "connect_timeout", "write_timeout", "read_timeout", "enabled"):
            if key in item:
                fields[key] = item[key]
        service_id = item.get("id") or entity_id("services", str(name or where))
        service = Service(id=service_id, name=name, tags=self._tags(item), created_at=self.now,
                          **fields)
        self.services.append(service)
        for i, route in enumerate(self._list("routes", item, where), start=1):
            # a nested route belongs to this service whatever its own `service` says
            self.pending_routes.append(({**route, "service": {"id": service_id}},
                                        f"{where}.routes[{i}]"))
        for i, plugin in enumerate(self._list("plugins", item, where), start=1):
            self.pending_plugins.append((plugin, f"{where}.plugins[{i}]",
                                         {"service": service_id}))

    def _route(self, item: Mapping[str, Any], where: str, service_id: str | None) -> None:
        name = item.get("name")
        paths = tuple(item.get("paths") or ())
        for path in paths:
            if not isinstance(path, str) or not path.startswith(("/", "~/")):
                self.errors.append(f"{where}: paths: {path!r}: expected a path starting with "
                                   "/ or a regex path starting with ~/")
            elif path.startswith("~"):
                try:
                    regex_path(path)
                except re.error as exc:
                    self.errors.append(f"{where}: paths: {path!r}: invalid regex: {exc}")
        methods = tuple(str(m).upper() for m in item.get("methods") or ())
        hosts = tuple(str(h) for h in item.get("hosts") or ())
        if not (paths or methods or hosts):
            self.errors.append(f"{where}: must set one of 'methods', 'hosts', 'paths'")
        for key in ("headers", "snis", "sources", "destinations", "expression"):
            if item.get(key):
                self.errors.append(f"{where}: {key}: not supported by the kong-credits host")
        route_id = item.get("id") or entity_id("routes", str(name or where))
        route = Route(
            id=route_id, name=name, service_id=service_id, paths=paths, methods=methods,
            hosts=hosts, strip_path=bool(item.get("strip_path", True)),
            preserve_host=bool(item.get("preserve_host", False)),
            regex_priority=int(item.get("regex_priority") or 0),
            protocols=tuple(item.get("protocols") or ("http", "https")),
            tags=self._tags(item), created_at=self.now,
        )
        self.routes.append(route)
        for i, plugin in enumerate(self._list("plugins", item, where), start=1):
            self.pending_plugins.append((plugin, f"{where}.plugins[{i}]", {"route": route_id}))

    def _consumer(self, item: Mapping[str, Any], where: str) -> None:
        username, custom_id = item.get("username"), item.get("custom_id")
        if not username and not custom_id:
            self.errors.append(f"{where}: at least one of these fields must be non-empty: "
                               "'custom_id', 'username'")
            return
        key = str(username) if username else f"custom_id:{custom_id}"
        consumer_id = item.get("id") or entity_id("consumers", key)
        self.consumers.append(Consumer(id=consumer_id, username=username, custom_id=custom_id,
                                       tags=self._tags(item), created_at=self.now))
        for i, cred in enumerate(self._list("keyauth_credentials", item, where), start=1):
            self._credential(cred, f"{where}.keyauth_credentials[{i}]", consumer_id)
        for i, plugin in enumerate(self._list("plugins", item, where), start=1):
            self.pending_plugins.append((plugin, f"{where}.plugins[{i}]",
                                         {"consumer": consumer_id}))

    def _credential(self, item: Mapping[str, Any], where: str, consumer_id: str) -> None:
        key = item.get("key")
        if not isinstance(key, str) or not key:
            self.errors.append(f"{where}: key: required field missing (the host does not "
                               "generate keys)")
            return
        cred_id = item.get("id") or entity_id("keyauth_credentials",
                                              f"keyauth_credentials:*:{key}")
        self.credentials.append(KeyAuthCredential(id=cred_id, key=key, consumer_id=consumer_id,
                                                  tags=self._tags(item), created_at=self.now))

    def _plugin(self, item: Mapping[str, Any], where: str, parents: dict[str, str]) -> None:
        name = item.get("name")
        if not isinstance(name, str) or not name:
            self.errors.append(f"{where}: name: required field missing")
            return
        scope: dict[str, str | None] = {}
        key_parts = ["plugins", "*", name]
        for kind in ("route", "service", "consumer"):
            ref = item.get(kind)
            if kind in parents:
                scope[kind] = parents[kind]
                key_parts.append(parents[kind])
            else:
                scope[kind] = self._ref(ref, where, kind)
                key_parts.append(ref if isinstance(ref, str) else "")
        config = item.get("config") or {}
        if not isinstance(config, Mapping):
            self.errors.append(f"{where}: config: expected a record")
            return
        plugin_id = item.get("id") or entity_id("plugins", ":".join(key_parts))
        plugin = PluginEntity(
            id=plugin_id, name=name, config=config, enabled=bool(item.get("enabled", True)),
            route_id=scope["route"], service_id=scope["service"],
            consumer_id=scope["consumer"], instance_name=item.get("instance_name"),
            tags=self._tags(item),
        )
        self.plugins.append(plugin)
        self.locations[plugin_id] = f"{where} ({name})"

    def _check_unique(self) -> None:
        seen: dict[tuple[str, Any], str] = {}
        for kind, values in (
            ("service name", [s.name for s in self.services if s.name]),
            ("route name", [r.name for r in self.routes if r.name]),
            ("consumer username", [c.username for c in self.consumers if c.username]),
            ("keyauth key", [c.key for c in self.credentials]),
            ("plugin", [(p.name, p.route_id, p.service_id, p.consumer_id)
                        for p in self.plugins]),
        ):
            for value in values:
                if (kind, value) in seen:
                    self.errors.append(f"uniqueness violation: {kind} {value!r} declared twice")
                seen[(kind, value)] = kind
