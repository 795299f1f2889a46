"""An OpenAPI 3 spec -> a Kong declarative config, as `deck file openapi2kong` converts it.

The rules are decK's (Kong/go-apiops `openapi2kong/openapi2kong.go` and `openapitools/`),
so the services, routes and plugins written here have the names and ids decK gives them:

- names: the document's `x-kong-name`, else `info.title`, slugified (lower-case, runs of
  anything but `a-z 0-9 -` become one `-`); a path's name is `<doc>_<x-kong-name or the
  slugified path>`, with `~` appended for a path ending in `/`; an operation's route is named
  `<path>_<x-kong-name>`, else `<doc>_<operationId>`, else `<path>_<method>`;
- ids: UUIDv5 in the DNS namespace of `<name>.service`, `<name>.route`, `<name>.upstream`,
  `<base>.plugin.<plugin>`;
- `x-kong-plugin-<name>` on the document goes on the document's service, on a path or an
  operation onto each route of it (the operation's beats the path's); a path or operation with
  its own `servers` or `x-kong-service-defaults` gets its own service, carrying the plugins of
  the levels above;
- paths become anchored regexes `~/a/(?<id>[^#?/]+)$` with `regex_priority` 100 (with path
  parameters) or 200, `strip_path: false`; required header parameters with an enum split a
  route per value combination.

Not converted (refused with a clear error): `x-kong-plugin-request-validator` (decK generates
its config from the request schemas) and the `--generate-security`, `--inso-compatible` and
`--reuse-services` options. Accented Latin letters in names are folded to ASCII (NFKD plus a
small table: `Straße` -> `strasse`) as decK's unidecode folds them; a name with letters of
another script is refused (decK transliterates them), asking for an ASCII `x-kong-name`.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import InvalidInput
from .deck_names import capture_name, entity_id, kong_name, operation_route_name, slugify
from .deck_services import servers_of, service_entity

__all__ = ["HTTP_METHODS", "PLUGIN_PREFIX", "convert", "x_kong_object"]

HTTP_METHODS = ("delete", "get", "head", "options", "patch", "post", "put", "trace")
"""An OpenAPI path item's operations, in decK's (sorted) order."""

PLUGIN_PREFIX = "x-kong-plugin-"
_PRIORITY_WITH_PARAMS, _PRIORITY_PLAIN = 100, 200
_ESCAPED = "().+?*[$"
_PARAM = re.compile(r"{([^}]+)}")


class _Converter:
    """One conversion; holds the document, its `components.x-kong` and the tags."""

    def __init__(self, spec: Mapping[str, Any], tags: Sequence[str] | None) -> None:
        if not isinstance(spec, Mapping):
            raise InvalidInput("expected an OpenAPI document (a mapping)")
        self.spec = spec
        components = spec.get("components") or {}
        self.components = components.get("x-kong") or {} if isinstance(components, Mapping) \
            else {}
        self.tags = list(tags) if tags is not None else self._doc_tags()
        self.foreign: list[dict[str, Any]] = []

    def _doc_tags(self) -> list[str]:
        tags = self.spec.get("x-kong-tags")
        if tags is None:
            return []
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise InvalidInput("expected 'x-kong-tags' to be an array of strings")
        return list(tags)

    # -- x-kong objects ----------------------------------------------------------------------

    def xkong_object(self, holder: Mapping[str, Any], key: str) -> dict[str, Any] | None:
        """`holder[key]` as a fresh dict, a `$ref` into `#/components/x-kong/` followed."""
        value = holder.get(key)
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise InvalidInput(f"expected '{key}' to be a JSON/YAML object")
        ref = value.get("$ref")
        if ref is not None:
            if not isinstance(ref, str):
                raise InvalidInput("expected '$ref' pointer to be a string")
            if not ref.startswith("#/components/x-kong/"):
                raise InvalidInput("all 'x-kong-...' references must be at "
                                   "'#/components/x-kong/...'")
            node: Any = self.components
            for segment in ref.split("/")[3:]:
                node = node.get(segment) if isinstance(node, Mapping) else None
                if not isinstance(node, Mapping):
                    raise InvalidInput(f"reference '{ref}' not found")
            value = node
        return copy.deepcopy(dict(value))

    def plugins(self, holder: Mapping[str, Any] | None, inherited: list[dict[str, Any]] | None,
                base: str) -> list[dict[str, Any]]:
        """decK's getPluginsList: the inherited plugins re-identified under `base`, overridden
        by `holder`'s own `x-kong-plugin-*`, sorted by plugin name."""
        plugins: dict[str, dict[str, Any]] = {}
        for plugin in inherited or []:
            own = copy.deepcopy(plugin)
            own["id"], own["tags"] = entity_id(f"{base}.plugin.{own['name']}"), list(self.tags)
            plugins[own["name"]] = own
        for key in holder or {}:
            if not key.startswith(PLUGIN_PREFIX):
                continue
            name = key[len(PLUGIN_PREFIX):]
            if name == "request-validator":
                raise InvalidInput("x-kong-plugin-request-validator is not converted by "
                                   "kong-credits: write the spec with --format openapi and "
                                   "convert it with deck file openapi2kong")
            plugin = self.xkong_object(holder, key) or {}
            plugin.update(name=name, id=entity_id(f"{base}.plugin.{name}"), tags=list(self.tags))
            plugin.pop("service", None)
            plugin.pop("route", None)
            plugins[name] = plugin
        return [plugins[n] for n in sorted(plugins)]

    def move_foreign(self, plugins: list[dict[str, Any]], key: str, owner: str
                     ) -> list[dict[str, Any]]:
        """Plugins scoped to a consumer too move to the top level, naming their owner."""
        kept = []
        for plugin in plugins:
            if plugin.get("consumer") is None:
                kept.append(plugin)
            else:
                plugin[key] = owner
                self.foreign.append(plugin)
        return kept

    # -- services ---------------------------------------------------------------------------

    # -- the document -----------------------------------------------------------------------

    def convert(self, doc_name: str | None) -> dict[str, Any]:
        spec = self.spec
        info = spec.get("info") if isinstance(spec.get("info"), Mapping) else {}
        name = doc_name or kong_name(spec, "document") or str(info.get("title") or "")
        if not name:
            raise InvalidInput("the spec needs info.title or x-kong-name: decK names the "
                               "service after it (and would otherwise pick a random name)")
        doc_base = slugify(name)
        doc_servers = servers_of(spec)
        doc_service_defaults = self.xkong_object(spec, "x-kong-service-defaults")
        doc_upstream_defaults = self.xkong_object(spec, "x-kong-upstream-defaults")
        doc_route_defaults = self.xkong_object(spec, "x-kong-route-defaults")
        doc_service, doc_upstream = service_entity(doc_base, doc_servers, doc_service_defaults,
                                                   doc_upstream_defaults, self.tags)
        services, upstreams = [doc_service], [doc_upstream] if doc_upstream else []
        doc_plugins = self.plugins(spec, None, doc_base)
        doc_plugins = self.move_foreign(doc_plugins, "service", doc_service["name"])
        doc_service["plugins"] = doc_plugins

        paths = spec.get("paths")
        if paths == []:
            paths = {}  # an empty list, as YAML writers spell an empty object
        if not isinstance(paths, Mapping):
            raise InvalidInput("must have `.paths` in the root of the document")
        for path in sorted(paths):
            item = paths[path]
            if not isinstance(item, Mapping):
                raise InvalidInput(f"{path}: expected a path item (a mapping)")
            if "$ref" in item:
                raise InvalidInput(f"{path}: a path item $ref is not followed here; write the "
                                   "path item in place")
            own = kong_name(item, path)
            # decK marks a trailing "/" so that /a and /a/ get different names
            trailing = "~" if path.endswith("/") else ""
            path_slug = slugify(own) if own else slugify(path) + trailing
            path_base = f"{doc_base}_{path_slug}" if path_slug else doc_base

            new_path_service = new_upstream = False
            service_defaults = self.xkong_object(item, "x-kong-service-defaults")
            if service_defaults is None:
                service_defaults = doc_service_defaults
            else:
                new_path_service = True
            upstream_defaults = self.xkong_object(item, "x-kong-upstream-defaults")
            if upstream_defaults is None:
                upstream_defaults = doc_upstream_defaults
            else:
                new_path_service = new_upstream = True
            route_defaults = self.xkong_object(item, "x-kong-route-defaults")
            if route_defaults is None:
                route_defaults = doc_route_defaults
            path_servers = servers_of(item)
            if path_servers:
                new_path_service = new_upstream = True
            else:
                path_servers = doc_servers

            if new_path_service:
                path_service, path_upstream = service_entity(
                    path_base, path_servers, service_defaults, upstream_defaults, self.tags)
                path_plugins = self.plugins(item, doc_plugins, path_base)
                path_plugins = self.move_foreign(path_plugins, "service", path_service["name"])
                path_service["plugins"] = path_plugins
                services.append(path_service)
                if path_upstream is not None:
                    if new_upstream:
                        upstreams.append(path_upstream)
                    else:
                        path_service["host"] = doc_service["host"]
            else:
                path_service = doc_service
                path_plugins = self.plugins(item, None, path_base)

            for method in HTTP_METHODS:
                operation = item.get(method)
                if operation is None:
                    continue
                if not isinstance(operation, Mapping):
                    raise InvalidInput(f"{method.upper()} {path}: expected an operation")
                self.operation(
                    path, item, method.upper(), operation, doc_base, path_base,
                    _Level(path_service, path_plugins, path_servers, service_defaults,
                           upstream_defaults, route_defaults, new_path_service),
                    services, upstreams)

        result: dict[str, Any] = {"_format_version": "3.0"}
        result["services"] = services[1:] if len(services) > 1 and not doc_servers \
            else services
        result["upstreams"] = upstreams
        if self.foreign:
            result["plugins"] = sorted(self.foreign, key=_foreign_key)
        return result

    def operation(self, path: str, item: Mapping[str, Any], method: str,
                  operation: Mapping[str, Any], doc_base: str, path_base: str,
                  level: _Level, services: list[dict[str, Any]],
                  upstreams: list[dict[str, Any]]) -> None:
        where = f"{method} {path}"
        op_base = operation_route_name(doc_base, path_base, operation, method)
        new_service = new_upstream = False
        service_defaults = self.xkong_object(operation, "x-kong-service-defaults")
        if service_defaults is None:
            service_defaults = level.service_defaults
        else:
            new_service = True
        upstream_defaults = self.xkong_object(operation, "x-kong-upstream-defaults")
        if upstream_defaults is None:
            upstream_defaults = level.upstream_defaults
        else:
            new_service = new_upstream = True
        route_defaults = self.xkong_object(operation, "x-kong-route-defaults")
        if route_defaults is None:
            route_defaults = level.route_defaults
        servers = servers_of(operation)
        if servers:
            new_service = new_upstream = True
        else:
            servers = level.servers

        if new_service:
            service, upstream = service_entity(op_base, servers, service_defaults,
                                               upstream_defaults, self.tags)
            services.append(service)
            if upstream is not None:
                if new_upstream:
                    upstreams.append(upstream)
                else:
                    service["host"] = level.service["host"]
            plugins = self.plugins(self.spec, None, op_base)
            plugins = self.plugins(item, plugins, op_base)
            plugins = self.plugins(operation, plugins, op_base)
        else:
            service = level.service
            if level.new_service:
                plugins = self.plugins(operation, None, op_base)
            else:
                plugins = self.plugins(operation, level.plugins, op_base)

        route = copy.deepcopy(route_defaults) if route_defaults is not None else {}
        route.pop("service", None)
        route["plugins"] = self.move_foreign(plugins, "route", op_base)
        regex, priority = self.path_regex(path, item, operation, where)
        route["paths"] = [regex]
        route.update(id=entity_id(f"{op_base}.route"), name=op_base, methods=[method],
                     tags=list(self.tags))
        if "regex_priority" not in route:
            route["regex_priority"] = priority
        elif priority == _PRIORITY_WITH_PARAMS:
            route["regex_priority"] = int(route["regex_priority"]) - 1
        route.setdefault("strip_path", False)

        routes = service["routes"]
        for i, headers in enumerate(self.header_combinations(item, operation)):
            clone = copy.deepcopy(route)
            clone.update(headers=headers, name=f"{op_base}_{i}", id=entity_id(f"{op_base}_{i}"))
            header_base = _go_json(headers)
            for plugin in clone["plugins"]:
                plugin["id"] = entity_id(f"{op_base}{header_base}.plugin.{plugin['name']}")
            routes.append(clone)
        routes.append(route)

    # -- paths and parameters ---------------------------------------------------------------

    def path_regex(self, path: str, item: Mapping[str, Any], operation: Mapping[str, Any],
                   where: str) -> tuple[str, int]:
        converted = path
        for char in _ESCAPED:
            converted = converted.replace(char, "\\" + char)
        priority = _PRIORITY_PLAIN
        for var in _PARAM.findall(converted):
            priority = _PRIORITY_WITH_PARAMS
            capture = capture_name(var)
            if len(capture) >= 32:
                raise InvalidInput(f"{where}: path-parameter name exceeds 32 characters: "
                                   f"'{var}' (sanitized to '{capture}')")
            schema = self.parameter_schema(item, operation, var)
            repeat = "*" if isinstance(schema, Mapping) and schema.get("minLength") == 0 \
                else "+"
            converted = converted.replace("{" + var + "}", f"(?<{capture}>[^#?/]{repeat})", 1)
        return f"~{converted}$", priority

    def parameters(self, holder: Mapping[str, Any]) -> list[Mapping[str, Any]]:
        found = []
        for parameter in holder.get("parameters") or []:
            parameter = self.resolve(parameter)
            if isinstance(parameter, Mapping):
                found.append(parameter)
        return found

    def parameter_schema(self, item: Mapping[str, Any], operation: Mapping[str, Any],
                         name: str) -> Any:
        for holder in (operation, item):
            for parameter in self.parameters(holder):
                if parameter.get("name") == name:
                    return self.resolve(parameter.get("schema"))
        return None

    def header_combinations(self, item: Mapping[str, Any], operation: Mapping[str, Any]
                            ) -> list[dict[str, list[str]]]:
        """Required header parameters with an enum: one header set per value combination."""
        headers: list[tuple[str, list[str]]] = []
        seen: set[str] = set()
        for holder in (operation, item):
            for parameter in self.parameters(holder):
                schema = self.resolve(parameter.get("schema"))
                enum = schema.get("enum") if isinstance(schema, Mapping) else None
                name = parameter.get("name")
                if (parameter.get("in") == "header" and enum and parameter.get("required")
                        is True and name not in seen):
                    seen.add(name)
                    headers.append((str(name), [_yaml_scalar(v) for v in enum]))
        if not headers:
            return []
        combinations: list[dict[str, list[str]]] = [{}]
        for name, values in headers:
            combinations = [{**c, name: [v]} for c in combinations for v in values]
        return combinations

    def resolve(self, node: Any) -> Any:
        """Follow a local `$ref` (`#/components/...`) as libopenapi does for decK."""
        for _ in range(32):
            if not (isinstance(node, Mapping) and isinstance(node.get("$ref"), str)):
                return node
            ref = node["$ref"]
            if not ref.startswith("#/"):
                raise InvalidInput(f"only local references are supported, got '{ref}'")
            node = self.spec
            for segment in ref[2:].split("/"):
                segment = segment.replace("~1", "/").replace("~0", "~")
                node = node.get(segment) if isinstance(node, Mapping) else None
            if node is None:
                raise InvalidInput(f"reference '{ref}' not found")
        raise InvalidInput("reference loop")


class _Level:
    """What an operation inherits from its path."""

    def __init__(self, service: dict[str, Any], plugins: list[dict[str, Any]],
                 servers: list[Any], service_defaults: dict[str, Any] | None,
                 upstream_defaults: dict[str, Any] | None,
                 route_defaults: dict[str, Any] | None, new_service: bool) -> None:
        self.service, self.plugins, self.servers = service, plugins, servers
        self.service_defaults, self.upstream_defaults = service_defaults, upstream_defaults
        self.route_defaults, self.new_service = route_defaults, new_service


def _yaml_scalar(value: Any) -> str:
    """How a YAML scalar reads as text (yaml.Node.Value): true, 1, text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _go_json(value: Any) -> str:
    """encoding/json.Marshal: sorted keys, compact, HTML characters escaped."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _foreign_key(plugin: Mapping[str, Any]) -> str:
    return "\0".join(str(plugin.get(k) or "") for k in ("name", "service", "route", "consumer"))


def x_kong_object(spec: Mapping[str, Any], holder: Mapping[str, Any], key: str
                  ) -> dict[str, Any] | None:
    """`holder[key]` (an `x-kong-...` object of `spec`) as a fresh dict, `$ref` followed."""
    return _Converter(spec, []).xkong_object(holder, key)


def convert(spec: Mapping[str, Any], *, tags: Sequence[str] | None = None,
            doc_name: str | None = None) -> dict[str, Any]:
    """The declarative config `deck file openapi2kong` writes for `spec`.

    `tags` replaces `x-kong-tags` (decK's `--select-tag`); `doc_name` replaces the
    document's name (`x-kong-name`, `info.title`), as decK's `--uuid-base` does. Raises
    InvalidInput for what decK refuses or what is not converted here (module docstring).
    """
    return _Converter(spec, tags).convert(doc_name)
