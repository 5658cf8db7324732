"""The HTML report of a run (`nofone report`).

inputs.py finds and reads the outputs of the steps; figures.py draws one PNG per figure
(matplotlib, Agg canvas); html.py holds the page template and the escaping helpers; style.py the
colours of groups and tissues; build.py builds each section and writes the report atomically.
"""
