"""pytest plugin of the fork gate: each test's defect markers, written into the JUnit XML report.

The fork gate reads its verdict from the JUnit report, so that the report a CI system
shows and the verdict come from the same run. The `defect` marker is the single
source of truth; this only copies it into the report as a `defect` property.
Loaded with `-p gatekit.pytest_defects`.
"""


def pytest_collection_modifyitems(items):
    for item in items:
        for mark in item.iter_markers("defect"):
            item.user_properties.append(("defect", mark.args[0]))
