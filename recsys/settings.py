"""Settings shared by the CLI, the batch side and the service (environment variables prefixed RECSYS_)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent


STATE_URL_SCHEMES = ("redis", "rediss", "unix")


def check_state_url(url: str) -> str:
    """RECSYS_STATE_URL as the Redis client will read it; ValueError naming the variable when it is not one."""
    parts = urlsplit(url)
    hint = "expected redis://HOST:PORT/DB, rediss://HOST:PORT/DB or unix:///PATH/TO/redis.sock"
    if parts.scheme not in STATE_URL_SCHEMES:
        raise ValueError(f"RECSYS_STATE_URL={url!r} is not a Redis URL: {hint}")
    try:
        parts.port  # noqa: B018 - urlsplit checks the port only when it is read
    except ValueError:
        raise ValueError(f"RECSYS_STATE_URL={url!r} has a port that is not a number: {hint}") from None
    if parts.scheme == "unix":
        if not parts.path:
            raise ValueError(f"RECSYS_STATE_URL={url!r} names no socket path: {hint}")
        return url
    if not parts.hostname:
        raise ValueError(f"RECSYS_STATE_URL={url!r} names no host: {hint}")
    database = parts.path.strip("/")
    if database and not database.isdigit():
        raise ValueError(f"RECSYS_STATE_URL={url!r}: the database {database!r} is not a number: {hint}")
    return url


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RECSYS_")

    work_dir: Path = Field(default=Path("var"), description="runs, checkpoints, bundles, reports, journals")
    data_root: Path = Field(
        default=REPO_ROOT.parent / "shared" / "data", description="where the real datasets are read in place"
    )
    max_reject_rate: float = Field(default=0.05, ge=0.0, le=1.0)

    # -- the online service (`recsys serve`); every field is also RECSYS_<NAME> in the environment ---------
    bundles_root: Path | None = Field(
        default=None,
        description="bundles root holding CURRENT that the service serves and watches (default <work_dir>/bundles)",
    )
    host: str = Field(default="127.0.0.1", description="interface to listen on (loopback unless told otherwise)")
    port: int = Field(default=8000, ge=0, le=65535)
    workers: int = Field(default=1, ge=1, le=64, description="uvicorn worker processes")
    threads: int = Field(
        default=1,
        ge=1,
        le=64,
        description="onnxruntime intra-op and FAISS OpenMP threads per worker (1: no oversubscription)",
    )
    api_key: SecretStr | None = Field(
        default=None, description="key of the admin routes; they refuse every call when unset"
    )
    max_body_bytes: int = Field(default=1 << 20, ge=1024, description="larger request bodies get 413")
    body_timeout_s: float = Field(
        default=10.0, gt=0.0, le=300.0, description="a request body not complete by then gets 408 (slow clients)"
    )
    journal_path: Path | None = Field(
        default=None, description="SQLite event journal (default <work_dir>/journal/events.sqlite3)"
    )
    state_url: str | None = Field(
        default=None,
        description="shared event store of several replicas, redis://host:port/db (unset: the embedded SQLite "
        "journal of this machine). The Redis server must run with appendonly yes and appendfsync always",
    )
    state_dedupe_s: int = Field(
        default=7 * 24 * 3600,
        ge=60,
        description="how long the shared store remembers an event_id (a retry later than this is stored again) "
        "and keeps a user's live history",
    )
    reload_poll_s: float = Field(default=2.0, gt=0.0, description="how often the service looks at CURRENT")
    live_history_len: int = Field(
        default=200, ge=1, description="live events kept per user on top of the bundle's history"
    )
    live_max_users: int = Field(
        default=1_000_000,
        ge=1,
        description="users with live events kept per worker; past it the least recently active are forgotten "
        "(their events stay in the journal and reach the next bundle)",
    )
    engine_thread: bool = Field(
        default=True,
        description="score on a dedicated thread per worker (onnxruntime and FAISS release the GIL, so HTTP "
        "handling overlaps with scoring); false: score on the event loop",
    )
    access_log: bool = Field(default=True, description="one JSON log line per request")
    adcopy_budget_ms: float = Field(
        default=800.0, gt=0.0, le=10_000.0, description="live ad-copy generation stops here; the template answers"
    )
    # Admission control of POST /v1/recommendations/batch: a heavy caller waits or is refused, others are not.
    max_batch_results: int = Field(
        default=10_000,
        ge=1,
        le=256_000,
        description="most results one batch may ask for (queries × k); a larger batch gets 422 and is told to "
        "split itself (10 queries × k=1000 take ~30 ms to score and render, 256 × 1000 ~0.8 s)",
    )
    batch_concurrency: int = Field(
        default=2,
        ge=1,
        le=64,
        description="batch requests scored and rendered at once per worker, each on a thread of its own (not the "
        "scoring thread of single-user requests); the others wait for a slot",
    )
    batch_wait_s: float = Field(
        default=1.0,
        ge=0.0,
        le=60.0,
        description="how long a batch waits for a slot before it gets 429 with Retry-After (a batch within "
        "max_batch_results takes well under 0.1 s, so a full second without a slot means the worker is saturated)",
    )
    preview: bool = Field(
        default=False,
        description="serve GET /preview, an HTML page showing a user's history, recommendations, ad copy and "
        "similar items (for people looking at the model; off: the route does not exist)",
    )
    log_level: str = Field(default="info")

    @field_validator("state_url")
    @classmethod
    def _state_url_is_redis(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        return check_state_url(value)

    @property
    def bundles_dir(self) -> Path:
        return self.bundles_root or self.work_dir / "bundles"

    @property
    def journal_file(self) -> Path:
        return self.journal_path or self.work_dir / "journal" / "events.sqlite3"


def get_settings() -> Settings:
    return Settings()


def describe_invalid(exc: ValidationError) -> str:
    """A settings error as one line naming each environment variable that was wrong."""
    parts = []
    for error in exc.errors():
        message = error["msg"].removeprefix("Value error, ")
        name = f"RECSYS_{str(error['loc'][0]).upper()}" if error["loc"] else "settings"
        parts.append(message if name in message else f"{name}: {message}")
    return "; ".join(parts)
