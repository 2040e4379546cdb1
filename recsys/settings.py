"""Settings shared by the CLI, the batch side and the service (environment variables prefixed RECSYS_)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RECSYS_")

    work_dir: Path = Field(default=Path("var"), description="runs, checkpoints, bundles, reports, journals")
    data_root: Path = Field(
        default=REPO_ROOT.parent / "shared" / "data", description="where the real datasets are read in place"
    )
    max_reject_rate: float = Field(default=0.05, ge=0.0, le=1.0)

    @property
    def bundles_dir(self) -> Path:
        return self.work_dir / "bundles"

    @property
    def datasets_dir(self) -> Path:
        return self.work_dir / "datasets"

    @property
    def runs_dir(self) -> Path:
        return self.work_dir / "runs"


def get_settings() -> Settings:
    return Settings()
