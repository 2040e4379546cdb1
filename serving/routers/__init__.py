"""One router per resource: recommendations, events, items, admin, operations (health, readiness, metrics)."""
