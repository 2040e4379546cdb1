"""Settings shared by the CLI, the batch side and the service (environment variables prefixed RECSYS_)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent


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
    log_level: str = Field(default="info")

    @property
    def bundles_dir(self) -> Path:
        return self.bundles_root or self.work_dir / "bundles"

    @property
    def journal_file(self) -> Path:
        return self.journal_path or self.work_dir / "journal" / "events.sqlite3"


def get_settings() -> Settings:
    return Settings()
