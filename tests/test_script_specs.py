"""Each script's spec (``redisq.script_specs``) against the script itself: the KEYS and
ARGV positions the Lua reads are exactly the spec's, and a call that does not fit its spec
is refused before it reaches Redis."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from redisq.keys import GLOBAL_KEYS, LimitKeys, WorkerKeys
from redisq.script_specs import SPECS, ScriptCallError
from redisq.scripts import SCHEDULE_SCRIPT_NAMES, SCRIPT_NAMES, load_script

LUA = Path(__file__).resolve().parents[1] / "lua"


def positions(source: str, table: str) -> set[int]:
    return {int(n) for n in re.findall(rf"\b{table}\[(\d+)\]", source)}


def test_every_script_has_a_spec_and_every_spec_a_script():
    assert set(SPECS) == {*SCRIPT_NAMES, *SCHEDULE_SCRIPT_NAMES}
    assert {p.stem for p in LUA.glob("*.lua")} == set(SPECS)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_the_script_reads_exactly_the_fixed_keys_and_args_of_its_spec(name):
    spec = SPECS[name]
    source = (LUA / f"{name}.lua").read_text()
    assert max(positions(source, "KEYS"), default=0) == len(spec.keys), spec.keys
    assert max(positions(source, "ARGV"), default=0) == len(spec.args), spec.args
    reads_items = bool(re.search(r"#KEYS|#ARGV|\b(KEYS|ARGV)\[[a-z_]", source))  # a loop over items
    assert reads_items == bool(spec.item_keys or spec.item_args or spec.items_vary)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_the_spec_names_keys_the_key_layout_has(name):
    keys, limit_keys = WorkerKeys("w"), LimitKeys("l", "s")
    for key in SPECS[name].keys + SPECS[name].item_keys:
        assert hasattr(keys, key) or hasattr(limit_keys, key) or key in GLOBAL_KEYS, \
            f"{name}: neither WorkerKeys, LimitKeys nor GLOBAL_KEYS has {key!r}"


def test_a_call_that_does_not_fit_its_spec_is_refused():
    settle = SPECS["settle"]
    fixed_keys, fixed_args = len(settle.keys), len(settle.args)
    settle.check(fixed_keys + 2, fixed_args + 18)  # two receipts
    with pytest.raises(ScriptCallError, match="2 items of KEYS but 1 of ARGV"):
        settle.check(fixed_keys + 2, fixed_args + 9)
    with pytest.raises(ScriptCallError, match="not a whole number of items of 9"):
        settle.check(fixed_keys + 1, fixed_args + 10)
    with pytest.raises(ScriptCallError, match="fewer than its"):
        SPECS["claim"].check(4, 4)
    with pytest.raises(ScriptCallError, match="1 KEYS more than it takes"):
        SPECS["lease"].check(len(SPECS["lease"].keys) + 1, len(SPECS["lease"].args))
    with pytest.raises(ScriptCallError, match="not a whole number of items of 4"):  # per shared limit
        SPECS["claim"].check(len(SPECS["claim"].keys) + 1, len(SPECS["claim"].args))


def test_every_script_of_a_worker_takes_the_slot_probes_first():
    """``WorkerBase.run`` names the two probes (``WorkerKeys.migration_probes``) before a
    script's own KEYS, so every script of a worker drops them first (lua/includes/slot.lua);
    only the scripts on global keys (``GLOBAL_KEYS``), called without probes, do not."""
    for spec in SPECS.values():
        source = load_script(spec.name).source
        takes_probes = "local KEYS = keys_past_probes(KEYS)" in source
        on_global_keys = any(key in GLOBAL_KEYS for key in spec.keys)
        assert takes_probes != on_global_keys, f"lua/{spec.name}.lua: probes {takes_probes}, global {on_global_keys}"
