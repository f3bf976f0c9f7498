"""Many runs at once: local processes, or a Ray cluster when given its address."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from tqdm import tqdm

from .runner import RunError, run
from .scenario import Scenario


def _one(job: tuple[Scenario, str, Path | None]) -> dict[str, Any]:
    scenario, policy, out = job
    return run(scenario, policy, out, plots=False)


def sweep(scenarios: list[Scenario], policies: list[str], jobs: int = 2,
          ray_address: str | None = None, out: Path | None = None) -> list[dict[str, Any]]:
    """Results in the order scenario x policy."""
    work = [(s, p, out / s.name / p if out else None) for s in scenarios for p in policies]
    if ray_address is not None:
        try:
            import ray
        except ImportError as e:
            raise RunError("--ray needs the ray package: pip install -e '.[ray]' "
                           "(scripts/setup.sh installs it)") from e
        ray.init(address=ray_address)
        remote = ray.remote(_one)
        return ray.get([remote.remote(w) for w in work])
    with ProcessPoolExecutor(max_workers=max(1, jobs)) as pool:
        return list(tqdm(pool.map(_one, work), total=len(work), desc="sweep", disable=None))
