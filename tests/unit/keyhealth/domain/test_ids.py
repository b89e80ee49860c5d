"""Binding ids sort in creation order: lists are newest first by reading the ids backwards."""

from __future__ import annotations

from keyhealth.domain.ids import is_binding_id, new_binding_id


def test_ids_made_with_the_same_clock_reading_sort_in_creation_order():
    # The use cases pass a time truncated to the second: many binds share one reading.
    made = [new_binding_id(1_800_000_000.0) for _ in range(200)]
    assert made == sorted(made)
    assert len(set(made)) == len(made)


def test_later_times_sort_later_even_after_many_ids_in_one_millisecond():
    first = [new_binding_id(1_800_000_001.0) for _ in range(50)]
    later = new_binding_id(1_800_000_001.001)
    assert later > max(first)


def test_an_earlier_clock_reading_gives_an_earlier_id():
    later = new_binding_id(1_800_000_100.0)
    earlier = new_binding_id(1_800_000_050.0)
    assert earlier < later


def test_ids_have_the_documented_shape():
    for binding_id in (new_binding_id(), new_binding_id(0.0), new_binding_id(1_800_000_000.0)):
        assert is_binding_id(binding_id), binding_id
    assert not is_binding_id("bnd_01JXXXXXXXXXXXXXXXXXXXXXXU")
    assert not is_binding_id("bnd_" + "0" * 25)
