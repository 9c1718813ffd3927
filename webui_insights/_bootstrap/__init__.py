"""The folder ``webui-insights run`` puts first on ``PYTHONPATH``.

Only its ``sitecustomize.py`` is meant to be imported, and only as the
top-level module ``sitecustomize`` that Python's ``site`` imports at every
start-up; see that file. Nothing imports this package.
"""
