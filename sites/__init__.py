"""The site application: the `medsplit` command line, site and server nodes, local runs, demos, predictions.

This is where the core (``medsplit``) meets a site's data (``data_adapters``); the examples of site
configurations are in ``sites/examples/``.
"""
