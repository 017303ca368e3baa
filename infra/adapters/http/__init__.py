"""The HTTP adapter: auth, shared dependencies, rejections mapped to statuses, the guard, the OpenAPI, the app."""
