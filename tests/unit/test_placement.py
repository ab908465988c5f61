"""Placement: weighted rendezvous hashing (stable under membership change, proportional to
capacity), region preference, draining and full nodes skipped; and the membership view."""

import asyncio
import random
from collections import Counter

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from switchboard.actors.membership import Membership
from switchboard.actors.placement import choose_node
from switchboard.protocols import NodeInfo, actor_subject
from switchboard.storage.kv_memory import MemoryKeyValue

pytestmark = pytest.mark.unit

KEYS = [actor_subject("call", f"c{i}") for i in range(5000)]


def info(
    node_id: str,
    *,
    capacity: int = 100,
    region: str = "local",
    load: int = 0,
    draining: bool = False,
    kinds: tuple[str, ...] = ("call",),
) -> NodeInfo:
    return NodeInfo(
        node_id=node_id,
        region=region,
        capacity=capacity,
        load=load,
        draining=draining,
        kinds=list(kinds),
    )


def assign(nodes: list[NodeInfo], keys: list[str] = KEYS, **options: object) -> dict[str, str]:
    placed = {key: choose_node(key, nodes, **options) for key in keys}
    return {key: node.node_id for key, node in placed.items() if node is not None}


def shares(assignment: dict[str, str]) -> Counter[str]:
    return Counter(assignment.values())


TEN = [info(f"n{i}") for i in range(10)]


def test_every_caller_computes_the_same_node_whatever_the_order() -> None:
    shuffled = TEN[:]
    random.Random(7).shuffle(shuffled)
    assert assign(TEN) == assign(shuffled)


def test_removing_a_node_moves_only_the_keys_it_had() -> None:
    before = assign(TEN)
    gone = "n3"
    after = assign([n for n in TEN if n.node_id != gone])
    moved = {key for key in KEYS if before[key] != after[key]}
    assert moved == {key for key in KEYS if before[key] == gone}
    assert 300 < len(moved) < 700  # about a tenth of the keys, spread over the others
    assert len({after[key] for key in moved}) == 9


def test_adding_a_node_moves_keys_only_onto_it() -> None:
    before = assign(TEN)
    after = assign([*TEN, info("n10")])
    moved = {key for key in KEYS if before[key] != after[key]}
    assert {after[key] for key in moved} == {"n10"}
    assert 300 < len(moved) < 650  # about 1/11 of the keys


@settings(max_examples=60, deadline=None)
@given(
    ids=st.sets(st.text("abcdefgh0123456789", min_size=1, max_size=6), min_size=2, max_size=8),
    data=st.data(),
)
def test_rendezvous_is_stable_for_any_membership(ids: set[str], data: st.DataObject) -> None:
    nodes = [info(i, capacity=data.draw(st.integers(1, 1000))) for i in sorted(ids)]
    gone = data.draw(st.sampled_from(sorted(ids)))
    keys = KEYS[:200]
    before = assign(nodes, keys)
    after = assign([n for n in nodes if n.node_id != gone], keys)
    assert all(after[k] == before[k] for k in keys if before[k] != gone)


def test_equal_capacities_get_equal_shares() -> None:
    counts = shares(assign([info(f"n{i}") for i in range(5)]))
    for node_id, n in counts.items():
        assert 800 <= n <= 1200, (node_id, counts)


def test_shares_are_proportional_to_capacity() -> None:
    nodes = [
        info("small", capacity=100),
        info("medium", capacity=200),
        info("large", capacity=300),
        info("huge", capacity=400),
    ]
    counts = shares(assign(nodes))
    for node in nodes:
        expected = len(KEYS) * node.capacity / 1000
        assert abs(counts[node.node_id] - expected) < 0.15 * expected, counts


def test_nodes_of_the_callers_region_are_preferred() -> None:
    nodes = [
        info("eu1", region="eu"),
        info("eu2", region="eu"),
        info("us1", region="us", capacity=1000),
        info("us2", region="us", capacity=1000),
    ]
    assert set(assign(nodes, region="eu").values()) == {"eu1", "eu2"}
    assert set(assign(nodes, region="us").values()) == {"us1", "us2"}
    assert set(assign(nodes).values()) == {"eu1", "eu2", "us1", "us2"}  # no preference


def test_another_region_is_used_when_the_callers_region_has_no_room() -> None:
    nodes = [
        info("eu1", region="eu", draining=True),
        info("eu2", region="eu", load=100),
        info("us1", region="us"),
    ]
    assert set(assign(nodes, region="eu").values()) == {"us1"}
    assert set(assign(nodes, region="ap").values()) == {"us1"}  # a region with no nodes


def test_draining_and_full_nodes_are_skipped_and_only_their_keys_move() -> None:
    before = assign(TEN)
    nodes = [
        info("n1", draining=True),
        info("n2", load=100, capacity=100),
        info("n3", load=99, capacity=100),
    ] + [n for n in TEN if n.node_id not in ("n1", "n2", "n3")]
    after = assign(nodes)
    assert "n1" not in after.values() and "n2" not in after.values()
    assert "n3" in after.values()  # one slot left is room
    assert all(after[k] == before[k] for k in KEYS if before[k] not in ("n1", "n2"))


def test_only_nodes_hosting_the_kind_are_chosen() -> None:
    nodes = [info("calls", kinds=("call",)), info("tenants", kinds=("tenant",))]
    assert set(assign(nodes, kind="call").values()) == {"calls"}
    assert choose_node(KEYS[0], nodes, kind="stt_pool") is None


def test_no_eligible_node_means_no_placement() -> None:
    assert choose_node(KEYS[0], []) is None
    assert choose_node(KEYS[0], [info("n1", draining=True), info("n2", load=5, capacity=5)]) is None


# -- the membership view --------------------------------------------------------------------


async def put(kv: MemoryKeyValue, node: NodeInfo) -> None:
    await kv.put(node.node_id, msgspec.msgpack.encode(node))


async def test_membership_lists_live_nodes_and_their_kinds() -> None:
    kv = MemoryKeyValue()
    await put(kv, info("n1", kinds=("call",)))
    await put(kv, info("n2", kinds=("tenant", "call")))
    await kv.put("garbage", b"\xc1")
    membership = Membership(kv)
    assert set(await membership.refresh()) == {"n1", "n2"}
    assert membership.kinds() == {"call", "tenant"}
    assert membership.get("n2").kinds == ["tenant", "call"]


async def test_a_forgotten_node_is_not_placed_until_it_beats_again() -> None:
    kv = MemoryKeyValue()
    await put(kv, info("n1"))
    await put(kv, info("n2"))
    membership = Membership(kv)
    await membership.refresh()
    membership.forget("n1")
    assert [n.node_id for n in membership.nodes()] == ["n2"]
    await membership.refresh()  # n1 still heartbeats: it is back
    assert {n.node_id for n in membership.nodes()} == {"n1", "n2"}


async def test_a_node_that_stops_beating_leaves_with_the_ttl() -> None:
    kv = MemoryKeyValue(ttl=0.05)
    await put(kv, info("n1"))
    membership = Membership(kv)
    await membership.refresh()
    assert membership.get("n1") is not None
    await asyncio.sleep(0.08)
    await membership.refresh()
    assert membership.nodes() == []
