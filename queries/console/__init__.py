"""The web console: static pages served by the API itself, over the same API a client uses (docs/console.md)."""
