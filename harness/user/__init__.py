"""What a model owner uses: the ``ac_conformance`` pytest fixture (a ``pytest11`` entry point) and the
``ac-conformance check`` command line."""
