"""The engine: what a cell is (``case``), how it runs (``pipeline``), what it costs (``analysis``, ``peak``), how it is
judged (``checks``, ``invariants``, ``known_failures``) and compared (``golden``); ``suite.check_cell`` does all of it
for one cell.  Nothing here knows a particular row."""
