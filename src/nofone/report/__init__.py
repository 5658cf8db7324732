"""The HTML report of a run (`nofone report`).

inputs.py finds and reads the outputs of the steps; sections/ builds each section (one module
each, registered in sections/__init__.py) from what nofone.evaluate and nofone.stats compute;
figures/ draws one PNG per figure (matplotlib, Agg canvas); html.py holds the page template and
the escaping helpers; style.py the colours of groups and tissues; context.py what the sections
share; build.py runs the sections and writes the report atomically.
"""
