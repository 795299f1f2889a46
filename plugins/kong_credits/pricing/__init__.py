"""Prices where Kong users already describe their routes.

`openapi` reads prices from an OpenAPI spec (`x-kong-plugin-credits`, `x-credits-cost`) and
checks them against the plugin schema; `openapi2kong` converts a spec into a Kong declarative
config the way `deck file openapi2kong` does, so route names and plugin placement agree with
decK; `kic` writes prices as Kong Ingress Controller manifests and `deck_plugins` as a
`deck file add-plugins` file; `command` holds the `render-config` and `prices` commands. The
price list itself is `kong_credits.prices`.
"""
