"""Tests for collab.auth.principals.PrincipalCache with an injected clock."""

from __future__ import annotations

import uuid
from collections import OrderedDict

from hypothesis import given, settings
from hypothesis import strategies as st

from collab.auth.principals import PrincipalCache
from collab.domain.users import Principal

TTL_S = 60.0


class FakeClock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def principal(user_id: uuid.UUID | None = None, session_id: uuid.UUID | None = None) -> Principal:
    return Principal(
        user_id=user_id or uuid.uuid4(), session_id=session_id or uuid.uuid4(),
        username="alice", roles=("developer",),
    )


def make_cache(clock: FakeClock, *, ttl_s: float = TTL_S, max_entries: int = 100) -> PrincipalCache:
    return PrincipalCache(ttl_s=ttl_s, max_entries=max_entries, clock=clock)


def test_get_after_put() -> None:
    cache = make_cache(FakeClock())
    p = principal()
    assert cache.get(p.session_id) is None
    cache.put(p)
    assert cache.get(p.session_id) is p
    assert len(cache) == 1
    assert cache.get(uuid.uuid4()) is None


def test_put_again_replaces_and_does_not_duplicate() -> None:
    cache = make_cache(FakeClock())
    old = principal()
    new = Principal(old.user_id, old.session_id, "alice", ("admin",))
    cache.put(old)
    cache.put(new)
    assert cache.get(old.session_id) is new
    assert len(cache) == 1


def test_entry_expires_after_ttl() -> None:
    clock = FakeClock()
    cache = make_cache(clock)
    p = principal()
    cache.put(p)
    clock.advance(TTL_S - 0.001)
    assert cache.get(p.session_id) is p
    clock.advance(0.001)
    assert cache.get(p.session_id) is None
    assert len(cache) == 0


def test_get_does_not_extend_the_ttl() -> None:
    clock = FakeClock()
    cache = make_cache(clock)
    p = principal()
    cache.put(p)
    for _ in range(5):
        clock.advance(TTL_S / 10)
        assert cache.get(p.session_id) is p
    clock.advance(TTL_S / 2)
    assert cache.get(p.session_id) is None


def test_put_again_restarts_the_ttl() -> None:
    clock = FakeClock()
    cache = make_cache(clock)
    p = principal()
    cache.put(p)
    clock.advance(TTL_S - 1)
    cache.put(p)
    clock.advance(TTL_S - 1)
    assert cache.get(p.session_id) is p


def test_least_recently_used_is_evicted_beyond_max_entries() -> None:
    cache = make_cache(FakeClock(), max_entries=2)
    a, b, c = principal(), principal(), principal()
    cache.put(a)
    cache.put(b)
    assert cache.get(a.session_id) is a  # a is now more recent than b
    cache.put(c)
    assert len(cache) == 2
    assert cache.get(b.session_id) is None
    assert cache.get(a.session_id) is a
    assert cache.get(c.session_id) is c


def test_eviction_order_without_reads_is_insertion_order() -> None:
    cache = make_cache(FakeClock(), max_entries=3)
    ps = [principal() for _ in range(5)]
    for p in ps:
        cache.put(p)
    assert [cache.get(p.session_id) for p in ps] == [None, None, *ps[2:]]


def test_forget_session_forgets_only_that_session() -> None:
    cache = make_cache(FakeClock())
    user = uuid.uuid4()
    one, two = principal(user), principal(user)
    cache.put(one)
    cache.put(two)
    cache.forget_session(one.session_id)
    assert cache.get(one.session_id) is None
    assert cache.get(two.session_id) is two
    cache.forget_session(uuid.uuid4())  # unknown: nothing happens
    assert len(cache) == 1


def test_forget_user_forgets_all_of_that_users_sessions_only() -> None:
    cache = make_cache(FakeClock())
    alice, bob = uuid.uuid4(), uuid.uuid4()
    alice_sessions = [principal(alice) for _ in range(3)]
    bob_session = principal(bob)
    for p in [*alice_sessions, bob_session]:
        cache.put(p)
    cache.forget_user(alice)
    assert all(cache.get(p.session_id) is None for p in alice_sessions)
    assert cache.get(bob_session.session_id) is bob_session
    assert len(cache) == 1
    cache.forget_user(uuid.uuid4())  # unknown: nothing happens
    assert len(cache) == 1


def test_forget_user_still_works_after_evictions_and_expiry() -> None:
    clock = FakeClock()
    cache = make_cache(clock, max_entries=2)
    alice = uuid.uuid4()
    first, second = principal(alice), principal(alice)
    cache.put(first)
    clock.advance(TTL_S)
    assert cache.get(first.session_id) is None  # expired and dropped
    cache.put(second)
    cache.put(principal())
    cache.put(principal())  # evicts second
    third = principal(alice)
    cache.put(third)
    cache.forget_user(alice)
    assert cache.get(third.session_id) is None
    assert len(cache) == 1


def test_user_can_be_cached_again_after_forget_user() -> None:
    cache = make_cache(FakeClock())
    p = principal()
    cache.put(p)
    cache.forget_user(p.user_id)
    cache.put(p)
    assert cache.get(p.session_id) is p


def test_ttl_zero_disables_caching() -> None:
    cache = make_cache(FakeClock(), ttl_s=0)
    p = principal()
    cache.put(p)
    assert cache.get(p.session_id) is None
    assert len(cache) == 0


def test_max_entries_zero_disables_caching() -> None:
    cache = make_cache(FakeClock(), max_entries=0)
    p = principal()
    cache.put(p)
    assert cache.get(p.session_id) is None
    assert len(cache) == 0


# --- against a reference model -------------------------------------------------------------

USERS = [uuid.UUID(int=i) for i in range(1, 4)]
SESSIONS = [uuid.UUID(int=100 + i) for i in range(8)]
SESSION_OWNER = {sid: USERS[i % len(USERS)] for i, sid in enumerate(SESSIONS)}

operations = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.sampled_from(SESSIONS)),
        st.tuples(st.just("get"), st.sampled_from(SESSIONS)),
        st.tuples(st.just("forget_session"), st.sampled_from(SESSIONS)),
        st.tuples(st.just("forget_user"), st.sampled_from(USERS)),
        st.tuples(st.just("advance"), st.sampled_from([0.0, 1.0, 5.0, 10.0])),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(ops=operations, max_entries=st.integers(1, 5))
def test_behaves_like_a_ttl_lru_map(ops: list[tuple[str, object]], max_entries: int) -> None:
    """A session's principal is served iff put, not forgotten, not expired, not evicted (LRU)."""
    ttl_s = 10.0
    clock = FakeClock(0.0)
    cache = make_cache(clock, ttl_s=ttl_s, max_entries=max_entries)
    model: OrderedDict[uuid.UUID, tuple[Principal, float]] = OrderedDict()
    for op, arg in ops:
        if op == "put":
            p = principal(SESSION_OWNER[arg], arg)  # type: ignore[index, arg-type]
            cache.put(p)
            model[p.session_id] = (p, clock.now + ttl_s)
            model.move_to_end(p.session_id)
            while len(model) > max_entries:
                model.popitem(last=False)
        elif op == "get":
            entry = model.get(arg)  # type: ignore[arg-type]
            expected = None
            if entry is not None and clock.now < entry[1]:
                expected = entry[0]
                model.move_to_end(arg)  # type: ignore[arg-type]
            elif entry is not None:
                del model[arg]  # type: ignore[arg-type]
            assert cache.get(arg) is expected  # type: ignore[arg-type]
        elif op == "forget_session":
            cache.forget_session(arg)  # type: ignore[arg-type]
            model.pop(arg, None)  # type: ignore[call-overload]
        elif op == "forget_user":
            cache.forget_user(arg)  # type: ignore[arg-type]
            for sid in [s for s, (p, _) in model.items() if p.user_id == arg]:
                del model[sid]
        else:
            clock.advance(arg)  # type: ignore[arg-type]
        assert len(cache) == len(model) <= max_entries
