"""Pick the router a pool file asks for: profiled (measured competence) or lexical (declared skills)."""

from __future__ import annotations

from typing import Union

from aggregator import AggregatorChoice
from experts.config import PoolSpec, ProfileSource
from router._profiled import ProfiledRouter, ProfileMismatch
from router._profiles import ProfileSet
from router._recruit import SkillRouter
from router._store import ProfileStore, ProfileStoreError, import_document, import_json

Router = Union[SkillRouter, ProfiledRouter]


class RouterSetupError(RuntimeError):
    """The pool's routing section cannot be served; the message names the source."""


def load_profiles(pool: PoolSpec) -> ProfileSet | None:
    source = pool.routing.profiles
    if source is None:
        return None
    try:
        if source.json_file is not None:
            path = pool.source_dir / source.json_file
            return import_json(path)
        assert source.redis is not None
        return ProfileStore(source.redis, source.key_space or pool.name).load()
    except (ValueError, ProfileStoreError) as error:
        raise RouterSetupError(f"routing.profiles of pool {pool.name!r}: {error}") from None


def load_aggregator_choice(pool: PoolSpec) -> AggregatorChoice | None:
    """The measured aggregator choice: ``aggregation.choice``, else beside Redis-stored profiles, else None."""
    source = pool.aggregation.choice
    implicit = source is None
    if implicit:
        profiles = pool.routing.profiles
        if profiles is None or profiles.redis is None:
            return None
        source = ProfileSource(redis=profiles.redis, key_space=profiles.key_space)
    try:
        if source.json_file is not None:
            path = pool.source_dir / source.json_file
            data = import_document(path)
            return AggregatorChoice.from_dict(data, str(path))
        assert source.redis is not None
        document = ProfileStore(source.redis, source.key_space or pool.name).load_document("aggregators")
    except (ValueError, ProfileStoreError) as error:
        raise RouterSetupError(f"aggregation.choice of pool {pool.name!r}: {error}") from None
    if document is None:
        if implicit:
            return None
        raise RouterSetupError(
            f"aggregation.choice of pool {pool.name!r}: nothing stored yet; run `moesaic bench-aggregators`"
        )
    return AggregatorChoice.from_dict(document, f"redis {source.redis} key space {source.key_space or pool.name}")


def build_router(pool: PoolSpec) -> Router:
    """A ``ProfiledRouter`` when the pool file names profiles, else router v1 over declared skills."""
    profiles = load_profiles(pool)
    if profiles is None:
        return SkillRouter(pool)
    try:
        return ProfiledRouter(pool, profiles)
    except ProfileMismatch as error:
        raise RouterSetupError(f"routing.profiles of pool {pool.name!r}: {error}") from None
