"""The constraints Kubernetes puts on the manifests `render-config --format kic` writes, as
JSON Schemas for the `jsonschema` package, plus the CEL rules a schema cannot say.

KONG_PLUGIN is transcribed from the KongPlugin CRD's `openAPIV3Schema`
(Kong/kubernetes-configuration `config/crd/gateway-operator/configuration.konghq.com_kongplugins
.yaml`, v2.0.1): its properties, types, enums and `required`, and its three
`x-kubernetes-validations` in `kong_plugin_rule_errors`. The root has no
`x-kubernetes-preserve-unknown-fields`, so the API server would silently prune an unknown field:
here it is an error (`additionalProperties: false`), the only place this is stricter.

HTTPROUTE and INGRESS hold the fields we write, with the Gateway API v1 (`HTTPRoute`) and
`networking.k8s.io/v1` (`Ingress`) limits on them.
"""

from __future__ import annotations

from typing import Any

DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"

METADATA: dict[str, Any] = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "maxLength": 253, "pattern": DNS_SUBDOMAIN},
        "namespace": {"type": "string", "maxLength": 63,
                      "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
        "labels": {"type": "object", "additionalProperties": {"type": "string",
                                                              "maxLength": 63}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}

_SECRET_KEY_REF = {"type": "object", "required": ["key", "name"],
                   "properties": {"key": {"type": "string"}, "name": {"type": "string"}}}
_PHASES = {"type": "object", "additionalProperties": {"type": "array",
                                                      "items": {"type": "string"}}}

KONG_PLUGIN: dict[str, Any] = {
    "type": "object",
    "required": ["plugin"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "configuration.konghq.com/v1"},
        "kind": {"const": "KongPlugin"},
        "metadata": METADATA,
        "config": {"type": "object"},  # x-kubernetes-preserve-unknown-fields
        "configFrom": {"type": "object", "required": ["secretKeyRef"],
                       "properties": {"secretKeyRef": _SECRET_KEY_REF}},
        "configPatches": {"type": "array", "items": {
            "type": "object", "required": ["path", "valueFrom"],
            "properties": {"path": {"type": "string"}, "valueFrom": {
                "type": "object", "required": ["secretKeyRef"],
                "properties": {"secretKeyRef": _SECRET_KEY_REF}}}}},
        "consumerRef": {"type": "string"},
        "disabled": {"type": "boolean"},
        "instance_name": {"type": "string"},
        "ordering": {"type": "object", "properties": {"after": _PHASES, "before": _PHASES}},
        "plugin": {"type": "string"},
        "protocols": {"type": "array", "items": {
            "enum": ["http", "https", "grpc", "grpcs", "tcp", "tls", "udp"]}},
        "run_on": {"enum": ["first", "second", "all"]},
        "status": {"type": "object"},
    },
}


def kong_plugin_rule_errors(plugin: dict[str, Any]) -> list[str]:
    """The CRD's x-kubernetes-validations (the immutability rule needs an old object)."""
    errors = []
    if "config" in plugin and "configFrom" in plugin:
        errors.append("Using both config and configFrom fields is not allowed.")
    if "configFrom" in plugin and "configPatches" in plugin:
        errors.append("Using both configFrom and configPatches fields is not allowed.")
    return errors


_GROUP = {"type": "string", "maxLength": 253, "pattern": r"^$|" + DNS_SUBDOMAIN[1:]}
_KIND = {"type": "string", "minLength": 1, "maxLength": 63,
         "pattern": r"^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$"}
_OBJECT_NAME = {"type": "string", "minLength": 1, "maxLength": 253}
_PORT = {"type": "integer", "minimum": 1, "maximum": 65535}

HTTPROUTE: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "gateway.networking.k8s.io/v1"},
        "kind": {"const": "HTTPRoute"},
        "metadata": METADATA,
        "spec": {"type": "object", "additionalProperties": False, "properties": {
            "hostnames": {"type": "array", "maxItems": 16, "items": {
                "type": "string", "minLength": 1, "maxLength": 253,
                "pattern": r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*"
                           r"[a-z0-9])?)*$"}},
            "parentRefs": {"type": "array", "maxItems": 32, "items": {
                "type": "object", "required": ["name"],
                "properties": {"name": _OBJECT_NAME}}},
            "rules": {"type": "array", "maxItems": 16, "items": {
                "type": "object", "additionalProperties": False, "properties": {
                    "matches": {"type": "array", "maxItems": 64, "items": {
                        "type": "object", "additionalProperties": False, "properties": {
                            "path": {"type": "object", "required": ["type", "value"],
                                     "additionalProperties": False, "properties": {
                                         "type": {"enum": ["Exact", "PathPrefix",
                                                           "RegularExpression"]},
                                         "value": {"type": "string", "maxLength": 1024,
                                                   "pattern": "^/"}}},
                            "method": {"enum": ["GET", "HEAD", "POST", "PUT", "DELETE",
                                                "CONNECT", "OPTIONS", "TRACE", "PATCH"]},
                            "headers": {"type": "array", "maxItems": 16, "items": {
                                "type": "object", "required": ["name", "value"],
                                "properties": {
                                    "name": {"type": "string", "minLength": 1,
                                             "maxLength": 256,
                                             "pattern": r"^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$"},
                                    "value": {"type": "string", "minLength": 1,
                                              "maxLength": 4096}}}}}}},
                    "filters": {"type": "array", "maxItems": 16, "items": {
                        "type": "object", "required": ["type", "extensionRef"],
                        "properties": {
                            "type": {"const": "ExtensionRef"},
                            "extensionRef": {
                                "type": "object", "required": ["group", "kind", "name"],
                                "additionalProperties": False, "properties": {
                                    "group": _GROUP, "kind": _KIND, "name": _OBJECT_NAME}}}}},
                    "backendRefs": {"type": "array", "maxItems": 16, "items": {
                        "type": "object", "required": ["name"],
                        "properties": {"name": _OBJECT_NAME, "port": _PORT}}}}}}}},
    },
}

INGRESS: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "networking.k8s.io/v1"},
        "kind": {"const": "Ingress"},
        "metadata": METADATA,
        "spec": {"type": "object", "properties": {
            "ingressClassName": {"type": "string"},
            "rules": {"type": "array", "items": {"type": "object", "properties": {
                "host": {"type": "string", "pattern": r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?"
                                                      r"(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"},
                "http": {"type": "object", "required": ["paths"], "properties": {
                    "paths": {"type": "array", "minItems": 1, "items": {
                        "type": "object", "required": ["pathType", "backend"],
                        "additionalProperties": False, "properties": {
                            "path": {"type": "string", "pattern": "^/"},
                            "pathType": {"enum": ["Exact", "Prefix",
                                                  "ImplementationSpecific"]},
                            "backend": {"type": "object", "required": ["service"],
                                        "properties": {"service": {
                                            "type": "object", "required": ["name", "port"],
                                            "properties": {
                                                "name": {"type": "string", "maxLength": 63,
                                                         "pattern": r"^[a-z]([-a-z0-9]*"
                                                                    r"[a-z0-9])?$"},
                                                "port": {"type": "object", "properties": {
                                                    "number": _PORT}}}}}}}}}}}}}}}},
    },
}
