"""Reports of a run that a person reads: report.json (the data), report.md, report.html (one
self-contained file), and the comparison of two runs' report.json (``refvm report compare``).

collect.py gathers results from pytest's reports (which pytest-xdist relays from workers),
header.py what was tested, figures.py the key figures of a case, render_*.py the views and
compare.py the comparison. Nothing here boots or changes anything."""
