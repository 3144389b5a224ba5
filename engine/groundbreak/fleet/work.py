"""Fleet units: the plan's blocks packed into tasks of roughly a thousand chips of one scene.

A chip is far too small to be a distributed task, and so is a block at the edge of a 100 m site (one
chip). The fleet packs consecutive blocks of the same scene (``plan.WorkUnit``, north to south, west
to east) into one unit of up to ``max_chips`` chips; each block keeps its own id and is read as its
own ``pipeline.UnitTask`` inside the unit, so a chip's records are exactly what ``groundbreak run``
writes for it. Ids are deterministic: the first block's id, ``+N`` for N more blocks packed with it,
``#k`` for the k-th piece of a block cut because it alone exceeds ``max_chips``, ``~0``/``~1`` for
the halves of a split unit and ``~rN`` for the N-th retry of a unit's failed chips.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from ..grid import ChipGrid
from ..plan import ChipRef, Plan

#: Chips per fleet unit by default: ~1,000 keeps scheduler overhead (0.2–1 ms a task) under 1%.
DEFAULT_UNIT_CHIPS = 1024

Block = Tuple[str, Tuple[ChipRef, ...]]  # (plan block id, its chips in this unit)


@dataclass(frozen=True, slots=True)
class FleetUnit:
    unit_id: str
    scene_index: int
    blocks: Tuple[Block, ...]
    parent: Optional[str] = None
    generation: int = 0  # 0: planned; N: the N-th `fleet retry` of failed chips

    @property
    def chips(self) -> int:
        return sum(len(chips) for _, chips in self.blocks)

    def refs(self) -> Iterator[Tuple[str, ChipRef]]:
        for block_id, chips in self.blocks:
            for ref in chips:
                yield block_id, ref


def pack_units(plan: Plan, max_chips: int = DEFAULT_UNIT_CHIPS) -> List[FleetUnit]:
    """The plan's blocks packed into fleet units (order and ids deterministic)."""
    if max_chips < 1:
        raise ValueError("max_chips must be at least 1")
    units: List[FleetUnit] = []
    current: List[Block] = []
    state = {"scene": -1, "count": 0}

    def flush() -> None:
        if current:
            first = current[0][0]
            uid = first if len(current) == 1 else "%s+%d" % (first, len(current) - 1)
            units.append(FleetUnit(uid, state["scene"], tuple(current)))
            current.clear()
        state["count"] = 0

    for wu in plan.units:
        if len(wu.chips) > max_chips:  # a block bigger than a unit: cut into pieces of its own
            flush()
            for k, i in enumerate(range(0, len(wu.chips), max_chips)):
                units.append(FleetUnit("%s#%d" % (wu.unit_id, k), wu.scene_index,
                                       ((wu.unit_id, wu.chips[i:i + max_chips]),)))
            continue
        if current and (wu.scene_index != state["scene"] or state["count"] + len(wu.chips) > max_chips):
            flush()
        state["scene"] = wu.scene_index
        current.append((wu.unit_id, wu.chips))
        state["count"] += len(wu.chips)
    flush()
    return units


def split_unit(unit: FleetUnit) -> Tuple[FleetUnit, FleetUnit]:
    """Two halves of a unit (chip order kept), so a failure can be narrowed down to a chip."""
    refs = list(unit.refs())
    if len(refs) < 2:
        raise ValueError("a unit of one chip cannot be split")
    half = len(refs) // 2
    return (_regroup("%s~0" % unit.unit_id, unit, refs[:half]), _regroup("%s~1" % unit.unit_id, unit, refs[half:]))


def retry_unit(unit: FleetUnit, failed_chip_ids: Sequence[str], generation: int) -> FleetUnit:
    """A unit of just ``failed_chip_ids`` of ``unit``, for `fleet retry`."""
    wanted = set(failed_chip_ids)
    refs = [(b, r) for b, r in unit.refs() if r.chip_id in wanted]
    return _regroup("%s~r%d" % (unit.unit_id, generation), unit, refs, generation=generation)


def _regroup(unit_id: str, parent: FleetUnit, refs: List[Tuple[str, ChipRef]],
             generation: Optional[int] = None) -> FleetUnit:
    blocks: List[Tuple[str, List[ChipRef]]] = []
    for block_id, ref in refs:
        if not blocks or blocks[-1][0] != block_id:
            blocks.append((block_id, []))
        blocks[-1][1].append(ref)
    return FleetUnit(unit_id, parent.scene_index, tuple((b, tuple(c)) for b, c in blocks), parent=parent.unit_id,
                     generation=parent.generation if generation is None else generation)


# -- the ledger's compact form ----------------------------------------------------------------------
def encode_blocks(unit: FleetUnit, aoi_index: Dict[str, int]) -> bytes:
    """The unit's chips as compressed JSON: [[block, [[col, row, [aoi index, …]], …]], …]."""
    doc = [[block, [[r.col, r.row, [aoi_index[a] for a in r.aoi_ids]] for r in chips]] for block, chips in unit.blocks]
    return zlib.compress(json.dumps(doc, separators=(",", ":")).encode(), 6)


def decode_blocks(blob: bytes, grid: ChipGrid, aoi_ids: Sequence[str]) -> Tuple[Block, ...]:
    doc = json.loads(zlib.decompress(blob))
    return tuple((block, tuple(ChipRef(c, r, grid.chip_id(c, r), tuple(aoi_ids[i] for i in idx))
                               for c, r, idx in chips)) for block, chips in doc)
