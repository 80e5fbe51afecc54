"""The one exception type for mistakes a user can make (bad path, bad option, wrong folder)."""


class LstmgenError(Exception):
    """An error caused by the user's input; the CLI prints its message on one line and exits 2."""
