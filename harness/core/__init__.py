"""The engine: what a cell is (``case``), how it runs (``runners``, one per kind of row, on ``pipeline``; ``run.run_cell``
adds the baselines its verdicts need), what it costs (``analysis``, ``figures``, ``peak``), how it is judged
(``checks``, ``invariants``, ``known_failures``) and compared (``golden``); ``suite.check_cell`` does all of it for one
cell.  Nothing here knows a particular row."""
