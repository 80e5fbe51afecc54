"""The ``lstmgen`` command: thin subcommands over the library.

    main          the parser and the entry point
    flags         train's flags, one per settings field, in groups
    progress      the progress bar
    run_commands  train, eval, generate, demo, cache
"""

from lstmgen.cli.main import main

__all__ = ["main"]
