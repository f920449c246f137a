"""A pool of providers of one model (several keys, several gateways) serving one run.

Each member has its own provider (its key, its gateway), HTTP client, :class:`ConcurrencyController`
and :class:`RatePacer`: quotas are per key, so each member finds and holds its own. A single
provider is a pool of one, so the runner has one path.

**Choosing a member: smooth weighted round-robin** (nginx's): every pick adds each usable member's
weight to its score, takes the highest and subtracts the total. Over any window the shares match the
weights within one pick, interleaved (2:1 gives a a b a a b, not a a a a b b). Weights are the user's
split of spend across accounts, so they are a contract, not a hint: a least-loaded choice would let
latency decide the split. A member whose quota is full makes its jobs wait at its own controller; a
member taken out leaves the rotation and the others share its weight.

**A member's state** (a small circuit breaker)::

    active ──N consecutive failures──▶ cooling ──cool-down passed──▶ probing (back in rotation)
      ▲                                   ▲                             │
      └──────── a request answered ───────┼─────────────────────────────┤
                                          └── a request failed (cool-down doubles, up to a cap)
    any state ──fatal answer (401, 403 quota, Arrearage, 404)──▶ out (for the rest of the run)

The breaker opens only while another member is active: the last one standing is not benched (its
jobs' retries and backoff are the policy then, as with a single provider). A probe that fails with no
other member active leaves the member probing. A probing member takes its share again (no one-request
latch that a cancelled request could leave shut forever); its first answer decides.
A failure is a transient one (5xx, network, a timeout): 429s are the controller's business, a refusal
(moderation, a bad value) is an answer. A member is out at once on a fatal answer: a key that ran dry
will not refill during the run, and those answers are not billed, so the job goes to another member
at once. Only when every member is out does the run stop (exit 3), naming each member and why.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import anyio
import httpx

from ..concurrency import ConcurrencyController
from ..dataset.journal import PaidLinks, TaskRef
from ..errors import AmbiguousError, FatalError, GatewayError, RefusedError, TransientError
from ..limits import RatePacer
from ..providers.base import Provider
from .paid import gateway_of

__all__ = ["MEMBER_FATAL_KINDS", "Member", "Pool"]

#: Fatal answers that concern one member (its key or its gateway), not the run: the member is out.
MEMBER_FATAL_KINDS = frozenset({"auth", "forbidden", "not_found", "network"})

ACTIVE, COOLING, PROBING, OUT = "active", "cooling", "probing", "out"


@dataclass(eq=False)
class Member:
    """One key or gateway of the pool, with its own limits and counters."""

    name: str
    weight: int
    provider: Provider
    client: httpx.AsyncClient
    controller: ConcurrencyController
    pacer: RatePacer
    state: str = ACTIVE
    why: str = ""
    requests: int = 0  # requests sent (generations, submissions)
    images: int = 0  # images delivered through this member
    throttled: int = 0  # 429s
    failures: int = 0  # transient failures
    consecutive: int = 0  # transient failures in a row (the breaker's count)
    trips: int = 0  # times the breaker opened
    cooldown: float = 0.0  # the current cool-down (doubles on a failed probe)
    until: float = -math.inf  # cooling until (clock)
    score: int = 0  # smooth weighted round-robin
    error: FatalError | None = None  # what took it out

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "weight": self.weight, "state": self.state, "why": self.why,
                "requests": self.requests, "images": self.images, "throttled": self.throttled,
                "failures": self.failures, "breaker_trips": self.trips,
                "concurrency": self.controller.limit}


class Pool:
    """The members of a run and the choice among them (see the module doc)."""

    def __init__(self, members: list[Member], *, name: str, notes: list[str] | None = None,
                 trip_after: int = 5, cooldown: float = 30.0, max_cooldown: float = 300.0,
                 clock: Callable[[], float] = anyio.current_time) -> None:
        if not members:
            raise ValueError("a pool needs at least one member")
        self.members = members
        self.name = name
        self.notes = notes if notes is not None else []
        self.trip_after = trip_after
        self.base_cooldown = cooldown
        self.max_cooldown = max_cooldown
        self._clock = clock
        self._by_name: Mapping[str, Member] = {m.name: m for m in members}
        self._changed = anyio.Event()
        self._last_fatal: FatalError | None = None

    # ------------------------------------------------------------------ reading

    @property
    def single(self) -> bool:
        return len(self.members) == 1

    def member(self, name: str) -> Member | None:
        """The member journaled as ``name`` (an async task is polled through the member that took it)."""
        return self._by_name.get(name)

    def member_for(self, ref: TaskRef) -> Member | None:
        """The member a journaled task was submitted through: by name, else the one member at its
        gateway (a renamed member; :mod:`.paid` has already set aside tasks of other gateways)."""
        by_name = self._by_name.get(ref.provider)
        if by_name is not None:
            return by_name
        at = [m for m in self.members if not ref.gateway or gateway_of(m.provider.base_url) == ref.gateway]
        return at[0] if len(at) == 1 else None

    def member_for_links(self, paid: PaidLinks) -> Member | None:
        """The member whose rules download ``paid``'s links: the member that received them (by name),
        else a member at their gateway (any: the rules are the gateway's); None when neither is in
        this run's pool. Journals written before links named their member carry the pool's name and
        its first member's gateway: that member, as then."""
        by_name = self._by_name.get(paid.provider)
        if by_name is not None:
            return by_name
        at = [m for m in self.members if paid.gateway and gateway_of(m.provider.base_url) == paid.gateway]
        return at[0] if at else None

    @property
    def concurrency(self) -> int:
        return sum(m.controller.limit for m in self.members if m.state != OUT)

    def summary(self) -> list[dict[str, Any]]:
        return [m.to_dict() for m in self.members]

    def exhausted(self) -> bool:
        return all(m.state == OUT for m in self.members)

    def exhausted_error(self) -> FatalError:
        last = self._last_fatal
        if self.single and last is not None:
            return last
        listing = "; ".join(f"{m.name}: {m.why or m.state}" for m in self.members)
        return FatalError(f"no member of the provider pool {self.name} is left ({listing})",
                          kind=last.kind if last is not None else "fatal")

    # ------------------------------------------------------------------ choosing

    async def choose(self) -> Member:
        """The next member by weight; waits while every member left is cooling down."""
        while True:
            if self.exhausted():
                raise self.exhausted_error()
            now = self._clock()
            for m in self.members:
                if m.state == COOLING and m.until <= now:
                    m.state = PROBING
            usable = [m for m in self.members if m.state in (ACTIVE, PROBING)]
            if usable:
                total = sum(m.weight for m in usable)
                for m in usable:
                    m.score += m.weight
                best = max(usable, key=lambda m: m.score)
                best.score -= total
                return best
            waits = [m.until - now for m in self.members if m.state == COOLING]
            event = self._changed
            with anyio.move_on_after(min(waits) if waits else math.inf):
                await event.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    # ------------------------------------------------------------------ what happened

    def sent(self, member: Member) -> None:
        member.requests += 1

    def answered(self, member: Member, images: int = 0) -> None:
        """The member's gateway answered (a success, or a refusal of this job): the breaker closes."""
        member.images += images
        member.consecutive = 0
        if member.state == PROBING:
            member.state, member.why, member.cooldown = ACTIVE, "", 0.0
            self.notes.append(f"provider {member.name} answers again: back in the pool")
            self._notify()

    def failed(self, member: Member, exc: GatewayError) -> None:
        """Hear how a request through ``member`` failed (call for every GatewayError)."""
        if isinstance(exc, FatalError):
            if self.scoped(exc):  # else the whole run stops (a parameter no member can send, ...)
                self.take_out(member, exc)
        elif exc.kind == "rate_limited":
            member.throttled += 1
        elif isinstance(exc, TransientError | AmbiguousError):
            member.failures += 1
            member.consecutive += 1
            others = any(m.state == ACTIVE and m is not member for m in self.members)
            if others and (member.state == PROBING or (
                    member.state == ACTIVE and member.consecutive >= self.trip_after)):
                self._trip(member, exc)
        elif isinstance(exc, RefusedError):
            self.answered(member)

    def _trip(self, member: Member, exc: GatewayError) -> None:
        member.trips += 1
        doubled = member.cooldown * 2 if member.cooldown else self.base_cooldown
        member.cooldown = min(self.max_cooldown, doubled)
        member.until = self._clock() + member.cooldown
        member.state = COOLING
        member.why = f"{member.consecutive} failures in a row, last {exc.kind}"
        if not self.single:
            left = sum(m.state == ACTIVE for m in self.members)
            self.notes.append(f"provider {member.name} failed {member.consecutive} times in a row "
                              f"({exc.kind}): out for {member.cooldown:g} s, then probed; "
                              f"{left} member(s) carry on")
        self._notify()

    def scoped(self, exc: FatalError) -> bool:
        """Whether ``exc`` concerns one member (its key, its gateway) rather than the whole run."""
        return exc.kind in MEMBER_FATAL_KINDS

    def take_out(self, member: Member, exc: FatalError) -> None:
        """``member`` answered something fatal: out for the rest of the run."""
        if member.state == OUT:
            return
        member.state = OUT
        member.error = exc
        member.why = f"{exc.kind}: {exc.message}"
        self._last_fatal = exc
        left = [m.name for m in self.members if m.state != OUT]
        if left:
            self.notes.append(f"provider {member.name} is out of the pool ({exc.kind}: {exc.message}); "
                              f"the run goes on with {', '.join(left)}")
        self._notify()
