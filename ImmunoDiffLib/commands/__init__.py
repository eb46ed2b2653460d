"""The ``immunodiff`` command line: one module a command, each with ``add_parser`` and
``run``; ``options`` defines the options several commands share, ``terminal`` the progress
display. ``ImmunoDiffLib.cli`` only builds the parser from these modules and dispatches."""
