"""Client keys and client_auth as shared state: a stateful property test on a real Redis.

Two or three replicas' views (each a RuntimeSettings and a ClientKeys over its own core)
share one Redis prefix. Hypothesis creates and revokes keys and sets the mode through any
view, and resyncs views (what the watchers do on a message or every half second), in
orders nobody wrote down. The model is what Redis should hold (the keys, the mode) and
what each view last saw (its own changes apply at once; others' at its next resync).

Invariants, checked after every step:
- Redis: `open` is never stored beside a key; once a key has been made the stored mode
  is what the model says (create and revoke store `keys`, only a set stores `open`).
- Each view admits exactly what it last saw: a key it holds passes, a revoked or unknown
  key gets 401, no credential passes only if it saw `open` and no key, and the admin
  token always passes. In particular a view that saw `keys` is never open.
- After a resync of every view, every view admits exactly what the stored keys and mode
  allow: no view is left open, or holding a revoked key, by a message it missed.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import hypothesis.strategies as st
import pytest
import redis as sync_redis
from hypothesis import HealthCheck, settings
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from redis.asyncio import Redis

from services.router.fleet.client_keys import CLOSED, OPEN, ClientKeys
from services.router.fleet.core import Core
from services.router.fleet.runtime import RuntimeSettings
from shared.errors import Conflict, NotFound, Unauthorized
from shared.keys import Keys
from shared.redisconn import connect
from shared.settings import Settings

T = TypeVar("T")
ADMIN = "adm1n-token"
APPS = ("alpha", "beta", "gamma")


@dataclass
class View:
    """One replica's parts, and what the model says it last saw."""

    runtime: RuntimeSettings
    keys: ClientKeys
    # secret -> app: a view that missed a revocation may still hold the app's older secret
    # beside the new one it made itself, until its next resync
    seen_keys: dict[str, str] = field(default_factory=dict)
    seen_mode: str = OPEN


class ClientAuthMachine(RuleBasedStateMachine):
    redis_url = ""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.prefix = f"herdtest:{uuid.uuid4().hex[:10]}:"
        self.redis: Redis = connect(self.redis_url)
        self.views: list[View] = []
        self.stored_keys: dict[str, str] = {}  # the truth: app -> secret
        self.stored_mode: str | None = None  # None: never stored
        self.issued: list[tuple[str, str]] = []  # every (app, secret) ever made

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    @initialize(replicas=st.integers(min_value=2, max_value=3))
    def start(self, replicas: int) -> None:
        config = Settings.load(environ={}, redis_url=self.redis_url, redis_prefix=self.prefix,
                               admin_token=ADMIN, mdns_enabled=False)
        for _ in range(replicas):
            core = Core.create(config, self.redis)
            runtime = RuntimeSettings(core)
            self.views.append(View(runtime, ClientKeys(core, runtime)))

    def teardown(self) -> None:
        client = sync_redis.Redis.from_url(self.redis_url)
        try:
            batch = list(client.scan_iter(match=Keys(self.prefix).match(), count=500))
            if batch:
                client.delete(*batch)
        finally:
            client.close()
        self.run(self.redis.aclose())
        self.loop.close()

    # --- actions, through any view -------------------------------------------------------

    @precondition(lambda self: self.views)
    @rule(data=st.data(), app=st.sampled_from(APPS))
    def create(self, data: st.DataObject, app: str) -> None:
        view = data.draw(st.sampled_from(self.views))
        if app in self.stored_keys:
            with pytest.raises(Conflict):
                self.run(view.keys.create(app))
            return
        secret, record = self.run(view.keys.create(app))
        assert record.app == app
        self.stored_keys[app] = secret
        self.stored_mode = CLOSED
        self.issued.append((app, secret))
        view.seen_keys[secret] = app
        view.seen_mode = CLOSED

    @precondition(lambda self: self.views)
    @rule(data=st.data(), app=st.sampled_from(APPS))
    def revoke(self, data: st.DataObject, app: str) -> None:
        view = data.draw(st.sampled_from(self.views))
        if app not in self.stored_keys:
            with pytest.raises(NotFound):
                self.run(view.keys.revoke(app))
            return
        self.run(view.keys.revoke(app))
        del self.stored_keys[app]
        self.stored_mode = CLOSED
        view.seen_keys = {s: a for s, a in view.seen_keys.items() if a != app}
        view.seen_mode = CLOSED

    @precondition(lambda self: self.views)
    @rule(data=st.data(), mode=st.sampled_from((OPEN, CLOSED)))
    def set_mode(self, data: st.DataObject, mode: str) -> None:
        view = data.draw(st.sampled_from(self.views))
        if mode == OPEN and self.stored_keys:
            # Refused even when this view has not yet seen the keys another one made.
            with pytest.raises(Conflict):
                self.run(view.runtime.save({"client_auth": mode}))
            return
        self.run(view.runtime.save({"client_auth": mode}))
        self.stored_mode = mode
        view.seen_mode = mode

    @precondition(lambda self: self.views)
    @rule(data=st.data())
    def resync(self, data: st.DataObject) -> None:
        view = data.draw(st.sampled_from(self.views))
        self._resync(view)

    @precondition(lambda self: self.views)
    @rule()
    def resync_all(self) -> None:
        for view in self.views:
            self._resync(view)
        for view in self.views:  # every view now admits what Redis says
            assert view.seen_keys == self.stored_secrets()
            self._check(view)

    def stored_secrets(self) -> dict[str, str]:
        return {secret: app for app, secret in self.stored_keys.items()}

    def _resync(self, view: View) -> None:
        view.runtime.apply(self.run(view.runtime.load()))
        self.run(view.keys.resync())
        view.seen_keys = self.stored_secrets()
        if self.stored_mode is not None:
            view.seen_mode = self.stored_mode

    # --- invariants ------------------------------------------------------------------------

    @invariant()
    def redis_holds_a_coherent_state(self) -> None:
        raw = self.run(self.redis.hgetall(Keys(self.prefix).settings()))
        stored = json.loads(raw["client_auth"]) if "client_auth" in raw else None
        assert stored == self.stored_mode
        held = self.run(self.redis.hkeys(Keys(self.prefix).client_keys()))
        assert set(held) == set(self.stored_keys)
        assert not (stored == OPEN and held), "open stored beside a key"

    @invariant()
    def each_view_admits_what_it_last_saw(self) -> None:
        for view in self.views:
            self._check(view)

    def _check(self, view: View) -> None:
        keys = view.keys
        is_open = view.seen_mode == OPEN and not view.seen_keys
        assert keys.is_open() is is_open
        assert keys.mode() == (OPEN if is_open else CLOSED)
        if is_open:
            assert keys.authenticate("") is None
        else:
            with pytest.raises(Unauthorized):
                keys.authenticate("")
        assert keys.authenticate(f"Bearer {ADMIN}") is None
        held = view.seen_keys
        for app, secret in self.issued:
            if secret in held:
                record = keys.authenticate(f"Bearer {secret}")
                assert record is not None and record.app == app
            elif is_open:
                assert keys.authenticate(f"Bearer {secret}") is None
            else:
                with pytest.raises(Unauthorized):
                    keys.authenticate(f"Bearer {secret}")


def test_client_keys_and_client_auth_across_replicas(redis_url: str) -> None:
    ClientAuthMachine.redis_url = redis_url
    run_state_machine_as_test(ClientAuthMachine, settings=settings(
        max_examples=60, stateful_step_count=30, deadline=None,
        suppress_health_check=[HealthCheck.too_slow]))
