"""Test order: the fast known-answer tests first, the slow end-to-end runs last (`-m "not slow"` skips them)."""


def pytest_collection_modifyitems(items):
    def order(item):
        slow = item.get_closest_marker('slow') is not None
        return (slow, item.module.__name__.rpartition('.')[2] != 'test_known_answers')

    items.sort(key=order)  # stable: files and tests keep their order within each group
