"""The ``skipvsr`` command line: :mod:`skipvsr.cli.main` holds the parser, one module per command.

Nothing in the package imports from here; the commands glue the wings (video, eval, train) to
the model and own the process-wide effects (allocator settings, printing).
"""
