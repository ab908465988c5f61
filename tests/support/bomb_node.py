"""`python -m tests.support.bomb_node node --nats URL ...`: the real `switchboard` command line,
with one more child under the node's root supervisor: a `Bomb` (actor `bomb/bomb`) that
crashes on every `Crash`. The command line has no flag for root children (NodeConfig.children),
so this entry point gives NodeConfig that default before running it; everything else is the
shipped code path, so the test sees the process exit status a service manager would see.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from switchboard.supervisor import node
from switchboard.supervisor.cli import main
from switchboard.supervisor.spec import ChildSpec

from tests.support.actors import Bomb


def _bomb_children() -> list[ChildSpec]:
    return [ChildSpec(id="bomb", actor=Bomb)]


@dataclass
class BombNodeConfig(node.NodeConfig):
    children: list[ChildSpec] = field(default_factory=_bomb_children)


node.NodeConfig = BombNodeConfig  # type: ignore[misc]  # read by cli._run_node at call time

if __name__ == "__main__":
    raise SystemExit(main())
