"""Structured logs: one JSON object per line on stderr, for the service's own loggers and uvicorn's.

Call sites pass fields with `extra={"fields": {...}}`; they become top-level keys, so a log shipper can
filter on `route`, `status`, `bundle_version` without parsing messages.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            # Stack traces go to the log only; responses never carry them (serving/errors.py).
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def log_config(level: str = "info") -> dict[str, Any]:
    """A logging.config dict for uvicorn's log_config: everything through the JSON formatter."""
    level = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "serving.logs.JsonFormatter"}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}},
        "loggers": {
            "uvicorn": {"handlers": ["stderr"], "level": level, "propagate": False},
            "uvicorn.error": {"handlers": ["stderr"], "level": level, "propagate": False},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},  # ours is in middleware
            "recsys": {"handlers": ["stderr"], "level": level, "propagate": False},
        },
    }


def configure(level: str = "info") -> None:
    """For processes that do not start through uvicorn's log_config (tests building the app directly)."""
    import logging.config

    logging.config.dictConfig(log_config(level))
