"""The build side: from a model file to a Debian package, in the source tree.

Runs with jinja2, iasl and Debian's packaging tools; the laptop side never imports it.
"""
