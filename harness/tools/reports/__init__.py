"""Reports of nightly and compatibility runs, one module per concern.

``envs``    isolated per-torch environments (build once, reuse, disk size, prune)
``record``  the per-cell record type, run documents (summary, exit code, schema validation), history lines
``html``    report.html and trend.html rendering
``junit``   merging the JUnit XML of shards
``releases`` the release matrix: aggregation of the per-release runs (`make compat`)

``harness.tools.nightly`` is the command line on top of these.
"""
