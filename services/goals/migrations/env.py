from services.common.db import run_alembic_env
from services.goals.store import Base

run_alembic_env(Base.metadata)
