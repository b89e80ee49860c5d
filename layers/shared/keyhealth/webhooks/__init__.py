"""Webhooks and the event feed: what a tenant's platform is told about its bindings (docs/webhooks.md)."""
